"""Sign in with Bitrix24 on our own site: the OAuth 2.0 authorization-code flow (spec §2).

1. `portal_for_address`: the address the user typed must be an allow-listed portal host on which the app is
   installed and active; otherwise a clear refusal that says how to install the app. No outbound call yet.
2. `begin`: a random `state`, bound to this browser's session, single use, short-lived; the user goes to
   `https://<portal>/oauth/authorize/?client_id=...&state=...`.
3. `complete` (our redirect URI): the state is taken out of the session whatever happens next (a replay finds
   nothing); the portal's answer (`code, domain, member_id, ...`) must name the portal the state was made for;
   the code is exchanged at B24_OAUTH_URL (`grant_type=authorization_code`; it lives 30 s) and the answer's
   `member_id` must be that installed, active portal. Who the user is and whether they are an administrator
   come from the new token itself (app.info through the OAuth server, then user.current + user.admin), never
   from the query. Only then is the user's token pair stored and a first-party session opened.

Every refusal is a `SigninRefused` (a 4xx with a reason, 502 when Bitrix24 could not be asked); nothing is
stored before the last step.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from django.conf import settings
from django.contrib.sessions.backends.base import SessionBase
from django.db import transaction
from django.http import QueryDict
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from b24portal.domains import domain_of_endpoint, is_allowed_domain, split_host_port
from b24portal.intake import MEMBER_ID_RE, TOKEN_RE, Rejected, text_field
from oauth.errors import B24Error, B24PaymentRequired, B24TokensRevoked
from oauth.models import PortalToken
from oauth.tokens import TokenGrant, request_oauth, store_tokens
from placements import config
from placements.frames import SESSION_FRAME_TOKEN_KEY, issue_frame_token, prove_user_token, ui_language
from tenants.models import Portal

logger = logging.getLogger(__name__)

# The session keys. FRAME_TOKEN_KEY is shared with the cabinet (placements.frames.SESSION_FRAME_TOKEN_KEY): it reads it with
# placements.frames.read_frame_token, exactly like a token a verified frame hands out.
STATE_KEY = "b24portal.signin_state"
FRAME_TOKEN_KEY = SESSION_FRAME_TOKEN_KEY
SIGNED_IN_KEY = "b24portal.signed_in"
# How long a user may spend on the portal's authorize page (log in, decide) before the state lapses.
STATE_MAX_AGE = 600
AFTER_SIGNIN_URL = "/cabinet/"
INSTALL_HINT = gettext_lazy("Ask an administrator of your Bitrix24 to install the b24portal app (Applications → "
                            "Market, or the app link from your integrator), open it once inside Bitrix24, then sign "
                            "in here again.")

# The clock the state's age is measured with (tests replace it).
now = time.time


class SigninRefused(Rejected):
    """A sign-in that cannot go on: shown as a page with the reason (and, for a portal without the app, how
    to install it)."""

    def __init__(self, reason: str, status: int = 400, *, install_hint: bool = False) -> None:
        super().__init__(reason, status)
        self.install_hint = install_hint


@dataclass(frozen=True)
class SignedIn:
    portal: Portal
    user_id: int
    is_admin: bool
    lang: str


def normalize_address(address: Any) -> str:
    """What a user types ("https://shop.bitrix24.com/crm/", "Shop.Bitrix24.com") → the host[:port]."""
    if not isinstance(address, str) or not address.strip():
        raise SigninRefused(_("Enter your Bitrix24 address, for example yourcompany.bitrix24.com."))
    text = address.strip()
    if len(text) > 300:
        raise SigninRefused(_("That is not a Bitrix24 address."))
    if "://" not in text:
        text = "https://" + text
    try:
        host = urlsplit(text).netloc.lower()
    except ValueError:
        raise SigninRefused(_("That is not a Bitrix24 address.")) from None
    if "@" in host or split_host_port(host) is None:
        raise SigninRefused(_("That is not a Bitrix24 address."))
    return host


def portal_for_address(address: Any) -> Portal:
    domain = normalize_address(address)
    if not is_allowed_domain(domain):
        raise SigninRefused(_("%(domain)s is not a Bitrix24 portal this service works with.") % {"domain": domain},
                            403)
    # A webhook-connected portal has no app installed: nobody can sign in to it with OAuth.
    portal = Portal.objects.filter(domain=domain, connection=Portal.Connection.APP).first()
    if portal is None:
        raise SigninRefused(_("The b24portal app is not installed on %(domain)s.") % {"domain": domain}, 404,
                            install_hint=True)
    if not portal.is_operational:
        raise SigninRefused(_("The b24portal app is not active on %(domain)s (%(status)s).") % {
            "domain": domain, "status": portal.get_status_display()}, 403, install_hint=True)
    return portal


def authorize_url(portal: Portal, state: str) -> str:
    return f"{portal.origin}/oauth/authorize/?{urlencode({'client_id': settings.B24_CLIENT_ID, 'state': state})}"


def begin(session: SessionBase, portal: Portal) -> str:
    """Bind a new state to this session (replacing an unfinished one) and return where to send the user."""
    state = secrets.token_urlsafe(32)
    session[STATE_KEY] = {"state": state, "portal": portal.pk, "domain": portal.domain, "at": int(now())}
    return authorize_url(portal, state)


def _check_state(saved: Any, given: str) -> dict[str, Any]:
    if not given:
        raise SigninRefused(_("The answer from Bitrix24 carries no state. Start the sign-in again."), 400)
    if not isinstance(saved, dict) or not hmac.compare_digest(str(saved.get("state", "")), given):
        raise SigninRefused(_("This sign-in was not started in this browser, or it was already used. "
                              "Start the sign-in again."), 403)
    if now() - int(saved.get("at") or 0) > STATE_MAX_AGE:
        raise SigninRefused(_("The sign-in took too long. Start it again."), 400)
    return saved


def _exchange_code(code: str) -> dict[str, Any]:
    try:
        return request_oauth({"grant_type": "authorization_code", "code": code})
    except B24TokensRevoked:
        raise SigninRefused(_("The sign-in code has expired or was already used (it lives 30 seconds). "
                              "Sign in again."), 400) from None
    except B24PaymentRequired:
        raise SigninRefused(_("The app's subscription on this portal has run out; an administrator can renew "
                              "it in Bitrix24."), 403) from None
    except B24Error as exc:
        logger.warning("authorization code exchange failed", extra={"error": exc.code})
        raise SigninRefused(_("Bitrix24's sign-in server could not be asked just now. Try again in a minute."),
                            502) from None


def complete(session: SessionBase, query: QueryDict) -> SignedIn:
    """Check the redirect back from the portal, exchange its code, prove the user and store their tokens."""
    saved = session.pop(STATE_KEY, None)  # single use: gone whatever happens next
    error = text_field(query, "error", required=False, max_length=100)
    if error == "access_denied":
        raise SigninRefused(_("You did not allow b24portal access in Bitrix24, so you are not signed in."), 403)
    if error:
        raise SigninRefused(_("Bitrix24 did not sign you in (%(error)s).") % {"error": error}, 400)
    saved_state = _check_state(saved, text_field(query, "state", required=False, max_length=200))
    code = text_field(query, "code", pattern=TOKEN_RE)
    domain = text_field(query, "domain").lower()
    member_id = text_field(query, "member_id", pattern=MEMBER_ID_RE)
    if domain != saved_state["domain"]:
        raise SigninRefused(_("Bitrix24 answered for another portal than the one you asked to sign in to."), 403)
    portal = Portal.objects.filter(pk=saved_state["portal"], domain=domain, connection=Portal.Connection.APP).first()
    if portal is None or portal.member_id != member_id or not portal.is_operational:
        raise SigninRefused(_("The b24portal app is not installed on %(domain)s.") % {"domain": domain}, 403,
                            install_hint=True)

    payload = _exchange_code(code)
    if str(payload.get("member_id") or "") != portal.member_id:
        raise SigninRefused(_("Bitrix24's sign-in server answered for another portal."), 403)
    client_endpoint = str(payload.get("client_endpoint") or "")
    if client_endpoint and domain_of_endpoint(client_endpoint) != portal.domain:
        raise SigninRefused(_("Bitrix24's sign-in server names another portal address."), 403)
    access_token = str(payload["access_token"])
    if not TOKEN_RE.match(access_token) or not TOKEN_RE.match(str(payload["refresh_token"])):
        raise SigninRefused(_("Bitrix24's sign-in server answered with malformed tokens."), 502)
    user_id, is_admin = prove_user_token(portal, portal.domain, access_token)
    try:
        expires_in = min(max(int(payload.get("expires_in") or 3600), 60), 86400)
    except (TypeError, ValueError):
        expires_in = 3600
    grant = TokenGrant(access_token=access_token, refresh_token=str(payload["refresh_token"]),
                       expires_in=expires_in, scope=str(payload.get("scope") or "")[:1000], user_id=user_id)
    do_store_user_tokens(portal, grant, user_id, is_admin)
    return SignedIn(portal=portal, user_id=user_id, is_admin=is_admin, lang=ui_language(portal.language))


def do_store_user_tokens(portal: Portal, grant: TokenGrant, user_id: int, is_admin: bool) -> PortalToken:
    """The signed-in user's own pair. The installer's row is the portal's service token: it is refreshed
    with the new pair, never demoted (background work depends on it)."""
    with transaction.atomic():
        is_service = PortalToken.objects.select_for_update().filter(
            portal=portal, user_id=user_id, is_service=True).exists()
        return store_tokens(portal, grant, user_id=user_id, is_service=is_service, is_admin=is_admin)


def open_session(session: SessionBase, signed_in: SignedIn) -> None:
    """A new session key (no fixation), the frame token the cabinet reads, and who is signed in. The session
    lives as long as that frame token: once it lapses the user signs in again (and is proven again)."""
    session.cycle_key()
    session.set_expiry(config.frame_token_max_age())
    session[FRAME_TOKEN_KEY] = issue_frame_token(signed_in.portal, signed_in.user_id, signed_in.is_admin,
                                                 signed_in.lang)
    session[SIGNED_IN_KEY] = {"portal": signed_in.portal.pk, "domain": signed_in.portal.domain,
                              "user_id": signed_in.user_id, "is_admin": signed_in.is_admin}


def signed_in_as(session: SessionBase) -> dict[str, Any] | None:
    value = session.get(SIGNED_IN_KEY)
    return value if isinstance(value, dict) else None
