"""Frame security: the one mechanism every page Bitrix24 frames goes through.

A frame POST is accepted only when its DOMAIN is allow-listed, its member_id is a known ACTIVE portal on
that domain, its APPLICATION_TOKEN (when sent) matches in constant time, and its AUTH_ID is proven against
that portal (oauth.proofs: app.info through the OAuth server first, so a made-up token costs the portal
nothing; then user.current + user.admin in one batch within the portal's proof budget). The proof is cached
for at most B24_ADMIN_PROOF_SECONDS under a hash of (portal, token), never the token itself. Anything
else: a 403 (400 for a malformed body) with a reason and nothing stored.

A verified page gets a short-lived signed frame token bound to (portal, its install generation, Bitrix24
user, admin flag and when that was proven); its
own calls to our API carry it (`Authorization: Frame <token>`), so no third-party cookie is needed. Only
these entry points are CSRF-exempt and frameable, and only by that portal's origin
(`Content-Security-Policy: frame-ancestors <origin>`); everything else keeps X-Frame-Options: DENY.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.conf import settings
from django.core import signing
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import translation
from django.utils.translation import gettext_noop
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from b24portal.inputs import InputRejected, InvalidJson, bounded_int, parse_json_limited
from b24portal.intake import (
    LANG_RE,
    MEMBER_ID_RE,
    TOKEN_RE,
    Rejected,
    checked_domain,
    frame_response,
    read_form,
)
from b24portal.logging import bind_log_context
from oauth import proofs
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.models import PortalToken
from oauth.tokens import TokenGrant, store_tokens
from tenants.models import Portal

from . import config

logger = logging.getLogger(__name__)

FRAME_TOKEN_SALT = "placements.frame-token"
# Where a first-party session (signed in on our own site) keeps its frame token: the sign-in writes it, the
# cabinet reads it with read_frame_token, so both ways in obey the same install-generation and admin rules.
SESSION_FRAME_TOKEN_KEY = "b24portal.frame_token"
PROOF_CACHE_PREFIX = "placements:frame-proof:"
ADMIN_CLAIM_PREFIX = "placements:admin-claim:"
SUPPORTED_LANGS = ("en", "ru")
# Bitrix24 UI languages whose users read Russian more readily than English.
RUSSIAN_READING = {"ru", "ua", "by", "kz"}


@dataclass(frozen=True)
class FrameContext:
    """A verified frame: who opened it, where, and what the widget was given."""

    portal: Portal
    user_id: int
    is_admin: bool
    lang: str
    placement: str
    options: dict[str, Any]
    frame_token: str

    def token_for_item(self, entity: str, item_id: int) -> str:
        """A frame token whose API calls are limited to this one CRM item (the one the user was shown)."""
        return issue_frame_token(self.portal, self.user_id, self.is_admin, self.lang, (entity, item_id))


@dataclass(frozen=True)
class FramePrincipal:
    """Who a frame token speaks for (DRF's request.user on our API)."""

    portal: Portal
    user_id: int
    is_admin: bool
    lang: str
    item: tuple[str, int] | None = None  # the CRM item the page was opened for (its API calls are bound to it)

    is_authenticated = True
    is_anonymous = False

    @property
    def pk(self) -> str:
        return f"{self.portal.pk}:{self.user_id}"


def ui_language(lang: str) -> str:
    lang = (lang or "en").lower().split("-")[0].split("_")[0]
    if lang in SUPPORTED_LANGS:
        return lang
    return "ru" if lang in RUSSIAN_READING else "en"


# -- frame tokens ------------------------------------------------------------------------------------------
def issue_frame_token(portal: Portal, user_id: int, is_admin: bool, lang: str,
                      item: tuple[str, int] | None = None) -> str:
    # g: the portal's installation (a token from before an uninstall is void after a reinstall); t: when the
    # admin claim was proven (re-proven with user.admin once older than B24_ADMIN_PROOF_SECONDS).
    payload: dict[str, Any] = {"p": portal.pk, "m": portal.member_id, "g": portal.install_generation,
                               "u": user_id, "a": bool(is_admin), "t": int(time.time()), "l": lang}
    if item is not None:
        payload["i"] = [item[0], item[1]]
    return signing.TimestampSigner(salt=FRAME_TOKEN_SALT).sign_object(payload, compress=True)


def read_frame_token(token: str) -> FramePrincipal:
    """Raises Rejected(401/403) for a bad, expired or foreign token or a portal that is no longer active."""
    try:
        data = signing.TimestampSigner(salt=FRAME_TOKEN_SALT).unsign_object(
            token, max_age=config.frame_token_max_age())
    except signing.SignatureExpired:
        raise Rejected(gettext_noop("frame token expired; reopen the widget"), 401) from None
    except (signing.BadSignature, ValueError, TypeError):
        raise Rejected(gettext_noop("invalid frame token"), 401) from None
    if not isinstance(data, dict) or not isinstance(data.get("p"), int) or not isinstance(data.get("u"), int):
        raise Rejected(gettext_noop("invalid frame token"), 401)
    portal = Portal.objects.filter(pk=data["p"], member_id=data.get("m")).first()
    if portal is None or not portal.is_operational:
        raise Rejected(gettext_noop("the portal is not active"), 403)
    if data.get("g") != portal.install_generation:
        raise Rejected(gettext_noop("the app was reinstalled since this page opened; reopen the widget"), 401)
    item = data.get("i")
    scoped = (str(item[0]), int(item[1])) if isinstance(item, list) and len(item) == 2 else None
    is_admin = bool(data.get("a"))
    claimed = data.get("t")
    claimed_at = claimed if isinstance(claimed, int) else 0
    if is_admin and time.time() - claimed_at > settings.B24_ADMIN_PROOF_SECONDS:
        is_admin = _still_admin(portal, data["u"])
    return FramePrincipal(portal=portal, user_id=data["u"], is_admin=is_admin,
                          lang=str(data.get("l") or "en"), item=scoped)


def _still_admin(portal: Portal, user_id: int) -> bool:
    """Re-prove an old admin claim with user.admin and the user's own token (kept from the frame POST);
    the answer holds for B24_ADMIN_PROOF_SECONDS. Without a usable token the claim lapses."""
    key = f"{ADMIN_CLAIM_PREFIX}{portal.pk}:{user_id}"
    cached = cache.get(key)
    if isinstance(cached, bool):
        return cached
    try:
        is_admin = PortalClient(portal, user_id=user_id).call("user.admin") is True
    except B24Error:
        return False
    cache.set(key, is_admin, timeout=settings.B24_ADMIN_PROOF_SECONDS)
    return is_admin


# -- verifying a frame POST --------------------------------------------------------------------------------
def _field(data: Any, key: str, *, pattern: Any = None, required: bool = True, max_length: int = 255) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise Rejected(f"missing {key}")
        return ""
    value = str(value).strip()
    if len(value) > max_length:
        raise Rejected(f"{key} is too long")
    if pattern is not None and not pattern.match(value):
        raise Rejected(f"{key} is malformed")
    return value


def _proof_key(portal: Portal, access_token: str) -> str:
    digest = hashlib.sha256(f"{portal.pk}:{portal.member_id}:{access_token}".encode()).hexdigest()
    return PROOF_CACHE_PREFIX + digest


def prove_user_token(portal: Portal, domain: str, access_token: str) -> tuple[int, bool]:
    """The frame's token: live and of this application (app.info through the OAuth server, which costs the
    portal nothing), then user.current + user.admin against the portal within its proof budget. Returns
    (Bitrix24 user id, is admin). A failed proof is remembered briefly and refused without asking again."""
    with proofs.proving(access_token):
        proofs.app_info_from_server(access_token)
        proofs.take_proof_permit(domain, portal)
        proof = proofs.user_and_admin(portal.rest_endpoint, access_token)
    if proof.user_id <= 0:
        raise Rejected("user.current did not name a user", 403)
    return proof.user_id, proof.is_admin


def _store_user_tokens(portal: Portal, grant: TokenGrant, user_id: int, is_admin: bool) -> None:
    # The installer's row is the portal's service token: refresh it, never demote it.
    is_service = PortalToken.objects.filter(portal=portal, user_id=user_id, is_service=True).exists()
    store_tokens(portal, grant, user_id=user_id, is_service=is_service, is_admin=is_admin)


def verify_frame(request: HttpRequest) -> FrameContext:
    form = read_form(request)
    if not request.GET.get("DOMAIN"):
        raise Rejected("missing DOMAIN", 403)
    domain = checked_domain(_field(request.GET, "DOMAIN", max_length=255))
    member_id = _field(form, "member_id", pattern=MEMBER_ID_RE)
    access_token = _field(form, "AUTH_ID", pattern=TOKEN_RE, max_length=256)
    refresh = _field(form, "REFRESH_ID", pattern=TOKEN_RE, required=False, max_length=256)
    application_token = _field(form, "APPLICATION_TOKEN", pattern=TOKEN_RE, required=False, max_length=256)
    placement = _field(form, "PLACEMENT", required=False, pattern=None, max_length=100).upper() or "DEFAULT"
    try:
        expires = bounded_int(form.get("AUTH_EXPIRES") or 3600, lo=1, hi=2 * 86400, name="AUTH_EXPIRES")
        options = parse_json_limited(form.get("PLACEMENT_OPTIONS") or "{}", what="PLACEMENT_OPTIONS")
    except InvalidJson:
        raise Rejected("PLACEMENT_OPTIONS is not JSON") from None
    except InputRejected as exc:
        raise Rejected(str(exc)) from None
    if options == []:  # PHP's json_encode of an empty array
        options = {}
    if not isinstance(options, dict):
        raise Rejected("PLACEMENT_OPTIONS is not a JSON object")
    lang = _field(request.GET, "LANG", pattern=LANG_RE, required=False, max_length=10) or "en"

    portal = Portal.objects.filter(member_id=member_id, connection=Portal.Connection.APP).first()
    if portal is None:  # a webhook-connected portal has no app, hence no frames
        raise Rejected("unknown portal", 403)
    if portal.domain != domain:
        raise Rejected("this member_id belongs to a portal on another domain", 403)
    if not portal.is_operational:
        raise Rejected(f"the app is not active in this portal ({portal.status})", 403)
    bind_log_context(member_id=portal.member_id)
    # Compared only when we hold one: a portal installed from an older frame (no APPLICATION_TOKEN) may
    # not have sent it yet; the AUTH_ID proof below is required either way. A frame never sets it.
    if application_token and portal.application_token_hash and not portal.application_token_matches(
        application_token
    ):
        raise Rejected("APPLICATION_TOKEN does not match", 403)

    key = _proof_key(portal, access_token)
    proof = cache.get(key)
    if isinstance(proof, dict) and proof.get("portal") == portal.pk:
        user_id, is_admin = int(proof["user_id"]), bool(proof["is_admin"])
    else:
        user_id, is_admin = prove_user_token(portal, domain, access_token)
        # Short-lived: a demoted administrator is re-proven (and loses admin rights) within this time.
        ttl = max(1, min(expires - 60, settings.B24_ADMIN_PROOF_SECONDS))
        cache.set(key, {"portal": portal.pk, "user_id": user_id, "is_admin": is_admin}, ttl)
        if refresh:
            _store_user_tokens(portal, TokenGrant(access_token=access_token, refresh_token=refresh,
                                                  expires_in=max(expires, 1),
                                                  scope=str(form.get("APPLICATION_SCOPE") or "")[:1000],
                                                  user_id=user_id), user_id, is_admin)
    ui_lang = ui_language(lang)
    return FrameContext(portal=portal, user_id=user_id, is_admin=is_admin, lang=ui_lang, placement=placement,
                        options=options, frame_token=issue_frame_token(portal, user_id, is_admin, ui_lang))


FrameView = Callable[[HttpRequest, FrameContext], HttpResponse]


def frame_view(view: FrameView) -> Callable[[HttpRequest], HttpResponse]:
    """Verify, render in the user's language, and let exactly that portal frame the answer."""

    @wraps(view)
    def wrapper(request: HttpRequest) -> HttpResponse:
        try:
            context = verify_frame(request)
        except Rejected as exc:
            logger.info("frame rejected", extra={"reason": exc.reason, "status": exc.status})
            return JsonResponse({"error": exc.reason}, status=exc.status)
        with translation.override(context.lang):
            response = view(request, context)
        response["Content-Language"] = context.lang
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "no-referrer"
        return frame_response(response, context.portal.origin)

    # The form POST comes cross-site into Bitrix24's iframe; the token proof above replaces CSRF here.
    return csrf_exempt(require_POST(wrapper))
