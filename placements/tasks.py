"""Celery tasks: the periodic reconcile, staff rebind/unbind, and timeline comments for widget messages
(sent from the TimelineComment outbox, with a sweeper for lost dispatches)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from celery import Task, shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from b24portal.dispatch import redispatch_late
from b24portal.logging import log_context
from oauth.client import PortalClient, retry_delay
from oauth.errors import B24Error
from oauth.periodic import dispatch_due, run_for_each
from oauth.retry import retry_if_worth_it
from tenants.journal import journal, staff_actor
from tenants.models import JournalEntry, Portal

from . import actions
from .bindings import BINDINGS_CHECK
from .crm import ENTITIES
from .models import Binding, TimelineComment

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)



@shared_task
def reconcile_all_bindings() -> int:
    """Beat tick: the portals whose binding check is due (about once a day each, spread over the day, or at
    once after a trigger), many per task."""
    return dispatch_due(BINDINGS_CHECK, reconcile_bindings_chunk)


@shared_task(acks_late=True)
def reconcile_bindings_chunk(portal_ids: list[int]) -> dict[str, int]:
    def give_up(portal: Portal, exc: B24Error) -> None:
        journal(portal, JournalEntry.Kind.BINDING, f"reconcile failed: {exc.code} {exc.description}", level="error")

    return run_for_each(BINDINGS_CHECK, portal_ids, lambda portal: actions.do_reconcile_portal(portal).summary(),
                        give_up)


@shared_task(bind=True, max_retries=5, acks_late=True)
def reconcile_portal_bindings(self: Task, portal_id: int) -> str:
    portal = Portal.objects.filter(pk=portal_id, status=Portal.Status.ACTIVE).first()
    if portal is None:
        return "skipped"
    with log_context(member_id=portal.member_id):
        try:
            report = actions.do_reconcile_portal(portal)
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.BINDING, f"reconcile failed: {exc.code} {exc.description}",
                    level="error")
            return exc.code
        return report.summary()


@shared_task
def rebind_binding(binding_id: int, staff_user_id: int | None = None) -> str:
    binding = Binding.objects.select_related("portal").get(pk=binding_id)
    try:
        return actions.do_rebind(binding, staff_user=staff_actor(staff_user_id)[0]).summary()
    except B24Error as exc:
        journal(binding.portal, JournalEntry.Kind.BINDING, f"rebind {binding.code} failed: {exc.code}",
                level="error")
        return exc.code


@shared_task
def unbind_binding(binding_id: int, staff_user_id: int | None = None) -> str:
    binding = Binding.objects.select_related("portal").get(pk=binding_id)
    return actions.do_unbind(binding, staff_user=staff_actor(staff_user_id)[0])


@shared_task
def add_consent_fields(portal_id: int, staff_user_id: int | None = None) -> str:
    portal = Portal.objects.get(pk=portal_id)
    try:
        return actions.do_add_consent_fields(portal, staff_user=staff_actor(staff_user_id)[0]).summary()
    except B24Error as exc:
        journal(portal, JournalEntry.Kind.BINDING, f"adding the consent fields failed: {exc.code}", level="error")
        return exc.code


# -- timeline comments of widget sends (outbox: models.TimelineComment) --------------------------------------
MAX_TIMELINE_ATTEMPTS = 6


@shared_task(bind=True, max_retries=None, acks_late=True)
def send_timeline_comment(self: Task, comment_id: int) -> str:
    """Record a widget-sent SMS in the item's CRM timeline, as the user who sent it (their own token).

    Claimed like a send (pending -> sending in one conditional UPDATE), so a duplicate dispatch (the sweeper
    and a late original) posts it once; `crm.timeline.comment.add` is not idempotent, so a claim that never
    settled (the worker died mid-call) is not posted again but marked failed by the sweeper."""
    now = timezone.now()
    claimed = TimelineComment.objects.filter(pk=comment_id, state=TimelineComment.State.PENDING).update(
        state=TimelineComment.State.SENDING, attempts=F("attempts") + 1, claimed_at=now, next_attempt_at=None)
    if claimed != 1:
        return "not claimable"
    row = TimelineComment.objects.select_related("portal").get(pk=comment_id)
    portal = row.portal
    with log_context(member_id=portal.member_id):
        try:
            PortalClient(portal, user_id=row.user_id).call("crm.timeline.comment.add", {"fields": {
                "ENTITY_ID": row.item_id, "ENTITY_TYPE": ENTITIES[row.entity].timeline_type,
                "COMMENT": row.comment}})
        except B24Error as exc:
            error = f"attempt {row.attempts}: {exc.code} {exc.description}"[:500]
            if exc.retryable and row.attempts < MAX_TIMELINE_ATTEMPTS:
                delay = retry_delay(exc, row.attempts - 1)
                TimelineComment.objects.filter(pk=row.pk, state=TimelineComment.State.SENDING).update(
                    state=TimelineComment.State.PENDING, claimed_at=None, last_error=error,
                    next_attempt_at=timezone.now() + timedelta(seconds=delay))
                # If this publish fails too, the row is pending and due: the sweeper dispatches it.
                raise self.retry(countdown=delay, max_retries=None) from exc
            TimelineComment.objects.filter(pk=row.pk, state=TimelineComment.State.SENDING).update(
                state=TimelineComment.State.FAILED, claimed_at=None, last_error=error)
            journal(portal, JournalEntry.Kind.REST,
                    f"timeline comment on {row.entity} {row.item_id} failed: {exc.code}",
                    level="warning", details={"user_id": row.user_id, "timeline_comment": row.pk})
            return exc.code
    TimelineComment.objects.filter(pk=row.pk, state=TimelineComment.State.SENDING).update(
        state=TimelineComment.State.DONE, claimed_at=None, last_error="", done_at=timezone.now())
    return "ok"


@shared_task
def redispatch_timeline_comments() -> int:
    """Beat: timeline comments whose task was lost (broker down at commit, a retry never published) are
    dispatched again after `TIMELINE_REDISPATCH_AFTER_SECONDS`; a claim older than
    `SMS_CLAIM_TIMEOUT_SECONDS` (the worker stopped mid-call) is marked failed for staff, not repeated."""
    now = timezone.now()
    TimelineComment.objects.filter(
        state=TimelineComment.State.SENDING,
        claimed_at__lt=now - timedelta(seconds=settings.SMS_CLAIM_TIMEOUT_SECONDS),
    ).update(state=TimelineComment.State.FAILED, claimed_at=None,
             last_error="the worker stopped while adding it; not repeated (it may be in the timeline already)")
    late = now - timedelta(seconds=settings.TIMELINE_REDISPATCH_AFTER_SECONDS)
    due = TimelineComment.objects.filter(state=TimelineComment.State.PENDING, next_attempt_at__lt=late)
    return redispatch_late(due, "next_attempt_at", send_timeline_comment, now=now)


@shared_task(bind=True, max_retries=5, acks_late=True)
def add_timeline_comment(self: Task, portal_id: int, user_id: int, entity: str, item_id: int, comment: str) -> str:
    """Tasks queued before the outbox (TimelineComment) existed; new sends use `send_timeline_comment`."""
    portal = Portal.objects.get(pk=portal_id)
    with log_context(member_id=portal.member_id):
        try:
            PortalClient(portal, user_id=user_id).call("crm.timeline.comment.add", {"fields": {
                "ENTITY_ID": item_id, "ENTITY_TYPE": ENTITIES[entity].timeline_type, "COMMENT": comment}})
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.REST, f"timeline comment on {entity} {item_id} failed: {exc.code}",
                    level="warning", details={"user_id": user_id})
            return exc.code
    return "ok"
