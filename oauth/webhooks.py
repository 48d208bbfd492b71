"""Incoming webhooks as a way to reach a portal: reading the URL staff paste, and proving it works.

An incoming webhook (`https://<portal>/rest/<user id>/<secret>/`) calls REST methods with the rights of
the Bitrix24 user who created it, within the scopes chosen for it; no app is installed, so nothing that
needs an application context (events, widgets, SMS providers) is possible through it. The URL is proven
before anything is stored: `profile` (who the user is, and whether an administrator) and `scope` (what
the webhook grants) in one batch through the webhook itself. The domain must be on B24_PORTAL_DOMAINS
before any request goes out, and the proof takes a permit from the domain's proof budget (oauth.proofs).

The secret is a credential: it is kept only in `WebhookCredential.secret` (encrypted), masked in admin and
in logs (b24portal.logging masks `/rest/<id>/<secret>/`), and never put in an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from b24portal.domains import is_allowed_domain, rest_endpoint_for, split_host_port
from b24portal.intake import Rejected
from tenants.models import Portal

from .client import parse_answer, post_method, split_batch
from .errors import B24BadResponse, B24Error, B24TransportError
from .proofs import PROOF_TIMEOUT, take_proof_permit

# https://<host[:port]>/rest/<user id>/<secret>/ (the trailing slash is optional; nothing may follow).
_WEBHOOK_URL_RE = re.compile(r"^(?P<scheme>https?)://(?P<host>[^/?#@\s]+)/rest/(?P<user>\d{1,10})/"
                             r"(?P<secret>[A-Za-z0-9_]{4,128})/?$", re.IGNORECASE)
EXPECTED_FORM = "https://<portal>/rest/<user id>/<secret>/"


class WebhookRefused(Rejected):
    """The URL is not a usable incoming webhook; `reason` says why, and never contains the secret."""


@dataclass(frozen=True)
class WebhookAddress:
    domain: str
    https: bool
    user_id: int
    secret: str = field(repr=False)

    @property
    def rest_endpoint(self) -> str:
        return rest_endpoint_for(self.domain, https=self.https)

    @property
    def endpoint(self) -> str:
        return f"{self.rest_endpoint}{self.user_id}/{self.secret}/"


@dataclass(frozen=True)
class WebhookProof:
    user: dict[str, Any]
    is_admin: bool
    scopes: list[str]

    @property
    def user_name(self) -> str:
        return " ".join(str(self.user.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()[:255]


def parse_webhook_url(url: str) -> WebhookAddress:
    """The parts of a webhook URL, or WebhookRefused: malformed, not https, or a host off the allow-list."""
    match = _WEBHOOK_URL_RE.match((url or "").strip())
    if match is None:
        raise WebhookRefused(f"not an incoming-webhook URL; expected {EXPECTED_FORM}", 400)
    https = match["scheme"].lower() == "https"
    if not https and not settings.B24_WEBHOOK_ALLOW_HTTP:
        raise WebhookRefused("the webhook URL must use https", 400)
    domain = match["host"].lower()
    if split_host_port(domain) is None:
        raise WebhookRefused("the webhook URL's host is not a valid host name", 400)
    if not is_allowed_domain(domain):
        raise WebhookRefused(f"{domain} is not an allowed portal domain (B24_PORTAL_DOMAINS)", 403)
    user_id = int(match["user"])
    if user_id <= 0:
        raise WebhookRefused("the webhook URL's user id must be a positive number", 400)
    return WebhookAddress(domain=domain, https=https, user_id=user_id, secret=match["secret"])


def prove_webhook(address: WebhookAddress, portal: Portal | None = None) -> WebhookProof:
    """`profile` + `scope` in one batch through the webhook. `portal`: the webhook portal already stored
    for this domain (a replaced URL), whose shared limiter the request also takes a permit from."""
    take_proof_permit(address.domain, portal)
    methods = {"profile": "profile", "scope": "scope"}
    try:
        response = post_method(address.endpoint, "batch", {"halt": 0, "cmd": methods}, None,
                               timeout=PROOF_TIMEOUT, suffix=".json")
        if response.is_redirect:
            raise WebhookRefused("the address answered with a redirect (a renamed or unknown portal); use the "
                                 "webhook URL with the portal's current address", 409)
        batch = split_batch(parse_answer(response, "batch", safe=True).result, methods)
    except B24TransportError as exc:
        raise WebhookRefused(f"the portal could not be reached ({exc.description}); try again", 502) from None
    except B24BadResponse as exc:
        raise WebhookRefused(f"no Bitrix24 REST answer at that address ({exc.description}): is it the "
                             "portal's address?", 502) from None
    except B24Error as exc:
        if exc.http_status in (401, 403):
            raise WebhookRefused(f"Bitrix24 refused the webhook ({exc.code}: {exc.description}): the secret is "
                                 "wrong, the webhook was deleted, or the user id is not its owner", 403) from None
        raise WebhookRefused(f"the portal answered {exc.code}: {exc.description}", 502) from None
    for key, error in batch.errors.items():
        raise WebhookRefused(f"{methods[key]} failed through the webhook ({error.code}: {error.description})", 403)
    user = batch.results.get("profile")
    if not isinstance(user, dict) or not str(user.get("ID") or "").isdigit():
        raise WebhookRefused("profile did not answer with a user", 502)
    if int(user["ID"]) != address.user_id:
        raise WebhookRefused(f"the webhook belongs to user {user['ID']}, not to user {address.user_id}", 403)
    raw_scopes = batch.results.get("scope")
    scopes = [str(s) for s in raw_scopes if isinstance(s, str)] if isinstance(raw_scopes, list) else []
    return WebhookProof(user=user, is_admin=user.get("ADMIN") is True, scopes=scopes)
