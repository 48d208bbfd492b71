"""Storing tokens and refreshing them under a row lock, so that many processes never race.

A refresh token rotates on every use: two processes refreshing the same pair at once would leave one of
them with `invalid_grant`. `refresh_token()` takes a `SELECT ... FOR UPDATE` on the token row, re-reads
it, and adopts a pair another process already refreshed instead of refreshing again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import requests
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from b24portal.domains import domain_of_endpoint, is_allowed_domain
from b24portal.http import get_session

from .errors import (
    B24AuthError,
    B24BadResponse,
    B24Error,
    B24PaymentRequired,
    B24TokensRevoked,
    B24TransportError,
    error_from_envelope,
)
from .models import PortalToken
from .signals import portal_endpoint_changed, token_refresh_refused

if TYPE_CHECKING:
    from tenants.models import Portal

logger = logging.getLogger(__name__)

# The row lock is held across the OAuth call: keep it short.
OAUTH_TIMEOUT = (5.0, 15.0)


@dataclass(frozen=True)
class TokenGrant:
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str = ""
    user_id: int | None = None


def store_tokens(portal: Portal, grant: TokenGrant, *, user_id: int, is_service: bool,
                 is_admin: bool | None = None) -> PortalToken:
    """Save a user's token pair (replacing the previous one); a service pair demotes any other."""
    expires_at = timezone.now() + timedelta(seconds=max(int(grant.expires_in or 0), 0))
    with transaction.atomic():
        if is_service:
            PortalToken.objects.filter(portal=portal, is_service=True).exclude(user_id=user_id).update(
                is_service=False
            )
        token, _ = PortalToken.objects.update_or_create(
            portal=portal,
            user_id=user_id,
            defaults={
                "access_token": grant.access_token,
                "refresh_token": grant.refresh_token,
                "expires_at": expires_at,
                "scope": grant.scope,
                "is_service": is_service,
                # The pair is new: its refresh token's unused time starts now (oauth.keepalive).
                "refreshed_at": timezone.now(),
                **({"is_admin": is_admin} if is_admin is not None else {}),
                "last_refresh_error": "",
            },
        )
    return token


def purge_tokens(portal: Portal) -> int:
    deleted, _ = PortalToken.objects.filter(portal=portal).delete()
    return deleted


def service_token(portal: Portal) -> PortalToken:
    token = PortalToken.objects.filter(portal=portal, is_service=True).first()
    if token is None:
        raise B24AuthError("NO_SERVICE_TOKEN", f"portal {portal.member_id} has no service token")
    return token


def request_oauth(params: dict[str, str]) -> dict[str, Any]:
    """One call to the OAuth server (B24_OAUTH_URL). The client secret goes nowhere else."""
    query = {"client_id": settings.B24_CLIENT_ID, "client_secret": settings.B24_CLIENT_SECRET, **params}
    try:
        response = get_session().get(settings.B24_OAUTH_URL, params=query, timeout=OAUTH_TIMEOUT,
                                     allow_redirects=False)
    except requests.ConnectionError as exc:
        raise B24TransportError(f"OAuth server unreachable: {type(exc).__name__}", sent=False,
                                method="oauth.refresh") from exc
    except requests.RequestException as exc:
        # A refresh that may have reached the server may have rotated the pair; the caller retries later
        # and will then see invalid_grant only if the server really consumed it.
        raise B24TransportError(f"OAuth request failed: {type(exc).__name__}", sent=True,
                                method="oauth.refresh") from exc
    try:
        payload = response.json()
    except ValueError:
        raise B24BadResponse(f"OAuth server answered HTTP {response.status_code} without JSON",
                             http_status=response.status_code, method="oauth.refresh", safe=True) from None
    if not isinstance(payload, dict):
        raise B24BadResponse("OAuth answer is not an object", http_status=response.status_code,
                             method="oauth.refresh")
    if "error" in payload:
        raise error_from_envelope(str(payload["error"]), str(payload.get("error_description", "")),
                                  http_status=response.status_code, method="oauth.refresh", safe=True)
    for key in ("access_token", "refresh_token"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            raise B24BadResponse(f"OAuth answer lacks {key}", http_status=response.status_code,
                                 method="oauth.refresh")
    return payload


def refresh_token(token_id: int, *, used_access_token: str) -> PortalToken:
    """Refresh a pair, or adopt the pair another process already refreshed. Exactly one OAuth call is made
    however many processes arrive here at once for the same token."""
    failure: B24Error | None = None
    with transaction.atomic():
        token = PortalToken.objects.select_for_update().select_related("portal").get(pk=token_id)
        if token.access_token != used_access_token and not token.is_expired():
            return token  # someone refreshed while we waited for the lock
        portal = token.portal
        try:
            payload = request_oauth({"grant_type": "refresh_token", "refresh_token": token.refresh_token})
        except (B24TokensRevoked, B24PaymentRequired) as exc:
            token.last_refresh_error = f"{exc.code}: {exc.description}"[:255]
            token.save(update_fields=["last_refresh_error", "updated_at"])
            failure = exc
        else:
            _check_refresh_answer(portal, payload)
            token.access_token = payload["access_token"]
            token.refresh_token = payload["refresh_token"]
            token.expires_at = timezone.now() + timedelta(seconds=int(payload.get("expires_in") or 3600))
            token.scope = str(payload.get("scope") or token.scope)
            token.refreshed_at = timezone.now()
            token.refresh_count += 1
            token.last_refresh_error = ""
            token.save()
            _adopt_client_endpoint(portal, str(payload.get("client_endpoint") or ""))
            logger.info("token refreshed", extra={"member_id": portal.member_id, "user_id": token.user_id})
    if failure is not None:
        # Outside the lock's transaction; the lifecycle decides what a refused refresh means for the portal.
        token_refresh_refused.send(sender=PortalToken, portal=portal, token=token, error=failure)
        raise failure
    return token


def _check_refresh_answer(portal: Portal, payload: dict[str, Any]) -> None:
    member_id = payload.get("member_id")
    if member_id and member_id != portal.member_id:
        raise B24BadResponse("OAuth answer is for another portal (member_id mismatch)", http_status=200,
                             method="oauth.refresh")


def _adopt_client_endpoint(portal: Portal, client_endpoint: str) -> None:
    """The refresh answer names the portal's current REST endpoint (its `domain` is the OAuth server's,
    not the portal's). A changed endpoint on an allowed host means the portal was renamed."""
    if not client_endpoint or client_endpoint == portal.rest_endpoint:
        return
    domain = domain_of_endpoint(client_endpoint)
    if domain is None or not is_allowed_domain(domain):
        logger.warning("refresh answer names a client_endpoint outside the allow-list; ignored",
                       extra={"member_id": portal.member_id})
        return
    portal_endpoint_changed.send(sender=PortalToken, portal=portal, domain=domain, rest_endpoint=client_endpoint,
                                 source="token refresh")
