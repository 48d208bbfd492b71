"""Celery tasks of the records app: apply a portal's owed jobs, the sweeper that finds lost or stuck ones,
and loading a portal's lead stages. Reply delivery and its sweeper live in `records.replies`.

`request_apply(portal_id)` publishes at most one queued apply task per portal (a short cache flag the task
clears when it starts), so 10,000 accepted jobs do not become 10,000 tasks; the task then works through the
portal's due jobs a batch at a time.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from celery import Task, shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.db.models import Min
from django.utils import timezone

from b24portal.dispatch import publish
from b24portal.logging import log_context
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.retry import retry_if_worth_it
from tenants.journal import journal, staff_actor
from tenants.models import JournalEntry, Portal

from . import stages
from .applying import apply_round, do_release_stale_claims
from .models import SyncJob

logger = logging.getLogger(__name__)

QUEUED_FLAG_SECONDS = 60


def _flag(portal_id: int) -> str:
    return f"records:apply-queued:{portal_id}"


def request_apply(portal_id: int, *, countdown: float | None = None) -> None:
    """Publish `apply_portal_jobs(portal_id)` unless one is queued already (now, or after `countdown`)."""
    if countdown:
        if apply_portal_jobs.app.conf.task_always_eager:
            return  # eager (tests): a countdown would run at once and find nothing due; tests move time on
        try:
            apply_portal_jobs.apply_async(args=(portal_id,), countdown=countdown)
        except Exception as exc:  # the jobs stay owed: the sweeper dispatches them
            logger.warning("apply task not dispatched", extra={"error": type(exc).__name__})
        return
    if not cache.add(_flag(portal_id), 1, timeout=QUEUED_FLAG_SECONDS):
        return
    publish(apply_portal_jobs, portal_id)


def request_apply_on_commit(portal_id: int) -> None:
    """`request_apply` once the current transaction commits (never raising into the committed request)."""
    eager = apply_portal_jobs.app.conf.task_always_eager
    transaction.on_commit(lambda: request_apply(portal_id), robust=not eager)


@shared_task(bind=True, acks_late=True)
def apply_portal_jobs(self: Task, portal_id: int) -> str:
    """Apply the portal's due jobs, one batch (≤ 50 commands) per round, for at most RECORDS_BATCHES_PER_RUN
    rounds; more work goes to a fresh task, a limit or a retry back-off to a task with a countdown."""
    cache.delete(_flag(portal_id))
    portal = Portal.objects.filter(pk=portal_id).first()
    if portal is None:
        return "no portal"
    done = {"succeeded": 0, "failed": 0, "retrying": 0}
    with log_context(member_id=portal.member_id):
        client = PortalClient(portal)
        for _ in range(max(int(settings.RECORDS_BATCHES_PER_RUN), 1)):
            result = apply_round(portal, client)
            done["succeeded"] += result.succeeded
            done["failed"] += result.failed
            done["retrying"] += result.retrying
            if result.claimed == 0 or result.retry_after is not None:
                break
        else:
            request_apply(portal_id)  # more to do: let other portals' tasks in between
            return f"{done} (continues)"
    _schedule_next(portal_id)
    return str(done)


def _schedule_next(portal_id: int) -> None:
    """A task for when the earliest job waiting for a retry falls due. (A due job not taken now waits for an
    earlier job of its record, whose own settling schedules what follows.)"""
    now = timezone.now()
    earliest = SyncJob.objects.filter(portal_id=portal_id, state=SyncJob.State.PENDING,
                                      next_attempt_at__gt=now).aggregate(at=Min("next_attempt_at"))["at"]
    if earliest is not None:
        request_apply(portal_id, countdown=(earliest - now).total_seconds() + 0.05)


@shared_task
def redispatch_lost_jobs() -> int:
    """Beat: jobs claimed by a worker that never settled them go back to pending (the next attempt of a
    create looks its lead up first); portals whose owed jobs have been due longer than
    RECORDS_REDISPATCH_AFTER_SECONDS (their task was lost) get an apply task again. Returns how many portals."""
    now = timezone.now()
    do_release_stale_claims(now)
    late = now - timedelta(seconds=settings.RECORDS_REDISPATCH_AFTER_SECONDS)
    portal_ids = list(SyncJob.objects.filter(state=SyncJob.State.PENDING, next_attempt_at__lt=late)
                      .values_list("portal_id", flat=True).distinct()[:1000])
    for portal_id in portal_ids:
        # Claimed by moving the clock: a second sweeper finds nothing late for this portal.
        moved = SyncJob.objects.filter(portal_id=portal_id, state=SyncJob.State.PENDING,
                                       next_attempt_at__lt=late).update(next_attempt_at=now)
        if moved:
            cache.delete(_flag(portal_id))
            request_apply(portal_id)
    return len(portal_ids)


@shared_task(bind=True, max_retries=5, acks_late=True)
def load_stage_mapping(self: Task, portal_id: int, staff_user_id: int | None = None) -> str:
    """Read the portal's lead stages (crm.status.list ENTITY_ID=STATUS) into its stage mapping."""
    portal = Portal.objects.get(pk=portal_id)
    staff_user, actor = staff_actor(staff_user_id)
    with log_context(member_id=portal.member_id):
        try:
            summary = stages.do_load_stages(portal)
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.REST, f"loading lead stages failed: {exc.code} {exc.description}",
                    level="error", actor=actor, staff_user=staff_user)
            return exc.code
    journal(portal, JournalEntry.Kind.STAFF if staff_user else JournalEntry.Kind.REST,
            f"lead stages loaded: {summary}", actor=actor, staff_user=staff_user)
    return summary

