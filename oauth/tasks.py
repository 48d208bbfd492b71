"""Celery tasks of the REST layer: capability checks, call-log roll-ups and retention."""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.utils import timezone

from b24portal.logging import log_context
from tenants.journal import journal
from tenants.models import JournalEntry, Portal

from . import calllog, confirmation, keepalive
from .capabilities import check_portal, do_record_capabilities
from .client import PortalClient
from .errors import B24Error
from .periodic import dispatch_due, run_for_each
from .retry import portal_task

logger = logging.getLogger(__name__)

CAPABILITIES_CHECK = "capabilities"


@shared_task
def refresh_all_capabilities() -> int:
    """Beat tick: the portals whose capability check is due (about once a day each, spread over the day),
    many per task."""
    return dispatch_due(CAPABILITIES_CHECK, check_capabilities_chunk)


@shared_task(acks_late=True)
def check_capabilities_chunk(portal_ids: list[int]) -> dict[str, int]:
    def check(portal: Portal) -> str:
        return "ok" if check_portal(portal, PortalClient(portal)).ok else "missing"

    def give_up(portal: Portal, exc: B24Error) -> None:
        do_record_capabilities(portal, None, error=f"{exc.code}: {exc.description}")

    return run_for_each(CAPABILITIES_CHECK, portal_ids, check, give_up)


def _capabilities_unknown(exc: B24Error, portal_id: int) -> str:
    portal = Portal.objects.get(pk=portal_id)
    do_record_capabilities(portal, None, error=f"{exc.code}: {exc.description}")
    return exc.code


@portal_task(max_retries=6, give_up=_capabilities_unknown)
def check_capabilities(self: Task, portal_id: int) -> str:
    portal = Portal.objects.filter(pk=portal_id).first()
    if portal is None or not portal.is_operational:
        return "skipped"
    with log_context(member_id=portal.member_id):
        caps = check_portal(portal, PortalClient(portal))
        return "ok" if caps.ok else "missing"


@shared_task
def keep_tokens_alive() -> int:
    """Beat tick: the portals whose daily keep-alive check is due (spread over the day), many per task."""
    keepalive.schedule_unscheduled(limit=settings.B24_DUE_CHECKS_PER_TICK)
    return dispatch_due(keepalive.TOKEN_KEEPALIVE, keep_tokens_alive_chunk)


@shared_task(acks_late=True)
def keep_tokens_alive_chunk(portal_ids: list[int]) -> dict[str, int]:
    def give_up(portal: Portal, exc: B24Error) -> None:
        # A refused refresh already moved the portal on (token_refresh_refused → needs reinstall / blocked).
        journal(portal, JournalEntry.Kind.TOKEN, f"keep-alive refresh failed: {exc.code} {exc.description}",
                level="warning")

    return run_for_each(keepalive.TOKEN_KEEPALIVE, portal_ids, keepalive.keep_alive, give_up)


@shared_task
def expire_parked_calls() -> int:
    """Hourly: calls that waited for a method confirmation longer than B24_METHOD_CONFIRM_TIMEOUT_HOURS fail."""
    return confirmation.do_expire()


@shared_task
def redispatch_confirmed_calls() -> int:
    """Every minute: confirmed calls whose resume was never dispatched (broker down) are dispatched again."""
    return confirmation.redispatch_confirmed()


@shared_task
def rollup_call_log() -> int:
    """Hourly: rebuild today's and yesterday's roll-ups so charts are current."""
    today = timezone.localdate()
    return calllog.rollup_day(today - timedelta(days=1)) + calllog.rollup_day(today)


@shared_task
def prune_call_log() -> int:
    """Daily: roll up and delete raw rows older than B24_CALL_LOG_RETENTION_DAYS."""
    return calllog.prune()
