"""Proving tokens that arrive in requests nobody has authenticated yet (install, app events, frames).

The OAuth server and `app.info` are the only sources of truth:
- `app_info_from_server`: `app.info` asked through the trusted `B24_SERVER_ENDPOINT` (oauth.bitrix.info),
  so a made-up token is refused there and costs the portal nothing; its `CODE` says which application
  the token belongs to;
- `user_and_admin`: `user.current` + `user.admin` in one batch against the portal itself, after a permit
  from the portal's proof budget;
- `exchange_refresh_token`: the OAuth server's answer to a refresh names the token's `member_id` and
  `client_endpoint`; the rotated pair replaces the one the browser carried.

Budget: a proof that reaches a portal takes a permit from its own small bucket per portal domain
(`B24_PROOF_RATE_PER_MINUTE`, `B24_PROOF_BURST`) and, for a known portal, one from the portal's shared
bucket, so unauthenticated traffic can never use more than that share of a portal's REST limit. A failed
proof is remembered for `B24_FAILED_PROOF_TTL` seconds (under a hash of the token) and refused at once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache

from b24portal.intake import Rejected
from tenants.models import Portal

from . import ratelimit
from .client import parse_answer, post_method, split_batch
from .errors import B24AuthError, B24BadResponse, B24Error, B24PortalMoved, B24RateLimited, B24TokensRevoked
from .tokens import TokenGrant, request_oauth

FAILED_PREFIX = "b24:proof-failed:"
PROVEN_PREFIX = "b24:proof-ok:"
PROOF_TIMEOUT = (5.0, 15.0)


class ProofFailed(Rejected):
    """The token does not prove what was claimed: answered like any rejected input (403 unless said)."""

    def __init__(self, reason: str, status: int = 403) -> None:
        super().__init__(reason, status)


class RefreshSpent(ProofFailed):
    """The OAuth server says the refresh token was already used (invalid_grant)."""


@dataclass(frozen=True)
class UserProof:
    user: dict[str, Any]
    is_admin: bool

    @property
    def user_id(self) -> int:
        try:
            return int(self.user.get("ID") or 0)
        except (TypeError, ValueError):
            return 0


def _token_key(access_token: str) -> str:
    return FAILED_PREFIX + hashlib.sha256(access_token.encode()).hexdigest()


def refuse_if_failed_before(access_token: str) -> None:
    reason = cache.get(_token_key(access_token))
    if reason:
        raise ProofFailed(f"{reason} (refused again without asking Bitrix24)")


def remember_failure(access_token: str, reason: str) -> None:
    cache.set(_token_key(access_token), reason, timeout=settings.B24_FAILED_PROOF_TTL)


@contextmanager
def proving(access_token: str) -> Iterator[None]:
    """Around one token's proof: a token that failed lately is refused at once, and a proof that fails
    with 403 (not a transient 429/502) is remembered for `B24_FAILED_PROOF_TTL`."""
    refuse_if_failed_before(access_token)
    try:
        yield
    except ProofFailed as exc:
        if exc.status == 403:
            remember_failure(access_token, exc.reason)
        raise


def remember_success(access_token: str, claims: dict[str, Any]) -> None:
    """A fully proven token's claims, for `B24_ADMIN_PROOF_SECONDS`: the same form posted again (a reload)
    is accepted without a second refresh, which would fail because the first one rotated the pair."""
    cache.set(PROVEN_PREFIX + _token_key(access_token), claims, timeout=settings.B24_ADMIN_PROOF_SECONDS)


def proven_before(access_token: str) -> dict[str, Any] | None:
    claims = cache.get(PROVEN_PREFIX + _token_key(access_token))
    return claims if isinstance(claims, dict) else None


def take_proof_permit(domain: str, portal: Portal | None) -> None:
    """A permit for one request to the portal on behalf of an unauthenticated caller, or ProofFailed(429)."""
    bucket = ratelimit.Bucket(rate=settings.B24_PROOF_RATE_PER_MINUTE / 60.0, burst=settings.B24_PROOF_BURST)
    if ratelimit.get_backend().run(f"proof:{domain}", bucket, 0.0, -1.0) < 0:
        raise ProofFailed("too many unverified requests for this portal; try again in a minute", 429)
    if portal is not None:
        try:
            wait = ratelimit.acquire(portal, max_wait=settings.B24_RATE_WEB_MAX_WAIT)
        except B24RateLimited:
            raise ProofFailed("the portal's REST limit is in use; try again in a minute", 429) from None
        if wait > 0:
            ratelimit.sleep(wait)


def app_info_from_server(access_token: str) -> dict[str, Any]:
    """`app.info` through the OAuth server's REST endpoint (never the portal): proves the token is live and
    says which application it was issued to."""
    try:
        response = post_method(settings.B24_SERVER_ENDPOINT, "app.info", {}, access_token, timeout=PROOF_TIMEOUT)
        if response.is_redirect:
            raise B24BadResponse("the OAuth server answered with a redirect", http_status=response.status_code)
        info = parse_answer(response, "app.info", safe=True).result
    except B24AuthError as exc:
        raise ProofFailed(f"the OAuth server rejected the token ({exc.code})") from None
    except B24Error as exc:
        raise ProofFailed(f"the OAuth server could not verify the token ({exc.code}); try again", 502) from None
    if not isinstance(info, dict):
        raise ProofFailed("app.info answer is not an app's info", 502)
    if str(info.get("CODE") or "") != settings.B24_CLIENT_ID:
        raise ProofFailed("the token belongs to another application")
    return info


def user_and_admin(rest_endpoint: str, access_token: str) -> UserProof:
    """`user.current` + `user.admin` in one batch against the portal (the caller took a proof permit)."""
    methods = {"user": "user.current", "admin": "user.admin"}
    try:
        response = post_method(rest_endpoint, "batch", {"halt": 0, "cmd": methods}, access_token,
                               timeout=PROOF_TIMEOUT)
        if response.is_redirect:
            raise B24PortalMoved("PORTAL_MOVED", "the portal answered with a redirect; it was renamed")
        batch = split_batch(parse_answer(response, "batch", safe=True).result, methods)
    except B24AuthError as exc:
        raise ProofFailed(f"the portal rejected the token ({exc.code})") from None
    except B24PortalMoved:
        raise ProofFailed("the portal answered with a redirect: it has moved; open the app from its new "
                          "address", 409) from None
    except B24Error as exc:
        raise ProofFailed(f"the portal could not verify the token ({exc.code}); try again", 502) from None
    if "user" in batch.errors:
        raise ProofFailed(f"the portal refused user.current ({batch.errors['user'].code})")
    user = batch.results.get("user")
    if not isinstance(user, dict) or not user.get("ID"):
        raise ProofFailed("user.current answer is not a user", 502)
    return UserProof(user=user, is_admin="admin" not in batch.errors and batch.results.get("admin") is True)


def exchange_refresh_token(refresh_token: str) -> tuple[TokenGrant, str, str]:
    """Refresh once with the OAuth server: (the rotated pair, its member_id, its client_endpoint)."""
    try:
        payload = request_oauth({"grant_type": "refresh_token", "refresh_token": refresh_token})
    except B24TokensRevoked as exc:
        raise RefreshSpent(f"the OAuth server refused the refresh token ({exc.code})") from None
    except B24Error as exc:
        status = 502 if exc.retryable else 403
        raise ProofFailed(f"the OAuth server refused the refresh token ({exc.code})", status) from None
    member_id = str(payload.get("member_id") or "")
    if not member_id:
        raise ProofFailed("the OAuth server's answer names no member_id", 502)
    try:
        expires_in = int(payload.get("expires_in") or 3600)
    except (TypeError, ValueError):
        expires_in = 3600
    grant = TokenGrant(access_token=payload["access_token"], refresh_token=payload["refresh_token"],
                       expires_in=min(max(expires_in, 0), 86400), scope=str(payload.get("scope") or ""))
    return grant, member_id, str(payload.get("client_endpoint") or "")
