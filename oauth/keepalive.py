"""Keeping idle portals' refresh tokens alive (spec §2: a refresh token unused for long dies; the docs say
180 days, some portals behaved like 28).

A portal that does any background work refreshes its service token about hourly anyway; only an idle one
needs help. Once a day per portal (the `token_keepalive` periodic check, spread over the day by
tenants.schedule), `keep_alive` refreshes the service token only if it would otherwise go unrefreshed for
longer than B24_TOKEN_KEEPALIVE_DAYS before the next check — through the locked refresh
(`tokens.refresh_token`). Never hourly, never per request: Bitrix24 warns it may block apps that refresh
on a schedule.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from tenants import schedule
from tenants.models import Portal

from .models import PortalToken
from .tokens import refresh_token

TOKEN_KEEPALIVE = "token_keepalive"
KEEPALIVE_INTERVAL = timedelta(days=1)


def last_refreshed(token: PortalToken) -> datetime:
    """When the pair was last obtained from Bitrix24 (stored or refreshed)."""
    return token.refreshed_at or token.created_at


def needs_keepalive(token: PortalToken, now: datetime) -> bool:
    """Would the refresh token go unused longer than the limit if we waited for the next daily check?"""
    limit = timedelta(days=settings.B24_TOKEN_KEEPALIVE_DAYS)
    return last_refreshed(token) + limit <= now + schedule.interval_of(TOKEN_KEEPALIVE)


def keep_alive(portal: Portal, now: datetime | None = None) -> str:
    token = PortalToken.objects.filter(portal=portal, is_service=True).first()
    if token is None:
        return "no service token"
    if not needs_keepalive(token, now or timezone.now()):
        return "used recently"
    refresh_token(token.pk, used_access_token=token.access_token)
    return "refreshed"


def schedule_unscheduled(limit: int) -> int:
    """Active portals installed before this check existed get their first (spread) due time."""
    # Webhook-connected portals have no OAuth tokens to keep alive.
    ids = list(Portal.objects.filter(status=Portal.Status.ACTIVE, connection=Portal.Connection.APP)
               .exclude(checks__kind=TOKEN_KEEPALIVE)
               .values_list("pk", flat=True)[:limit])
    return schedule.ensure_scheduled(ids, [TOKEN_KEEPALIVE], KEEPALIVE_INTERVAL) if ids else 0
