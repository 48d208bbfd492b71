"""Celery tasks of the SMS app: send one message, keep senders registered, and sweep stuck messages.

The send task never sleeps and never sends twice: it claims the row with a conditional UPDATE (only one
worker can move it from a sendable state to `sending`), and anything that may have reached the carrier
without a clear answer goes to `needs_review` instead of being sent again.

Imports run one way: the `do_*` modules (`accounts`, `sending`, `staff`) import these tasks to dispatch
them on commit; this module imports only the layers below them (models, carriers, senders, consent).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from datetime import timedelta
from typing import Any

from celery import Task, shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from b24portal.dispatch import redispatch_late
from b24portal.logging import log_context
from installs.steps import StepFailed
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.periodic import dispatch_due, run_for_each
from oauth.retry import retry_if_worth_it
from tenants.journal import journal
from tenants.models import JournalEntry, Portal

from .carriers import CarrierError, SendOutcomeUnknown
from .consent import is_opted_out
from .models import Message, ProviderAccount, forward_status_fields
from .phones import InvalidPhoneNumber, normalize_phone
from .senders import SENDERS_CHECK, reconcile_senders, sync_account_sender
from .status import DeliveryStatus

logger = logging.getLogger(__name__)

State = Message.State
OPTED_OUT = "recipient opted out"


# -- sending --------------------------------------------------------------------------------------------


def backoff_seconds(attempt: int, retry_after: float | None = None) -> float:
    """Exponential backoff with up to 25% jitter (so a carrier coming back is not hit by every message at
    once); never shorter than the carrier's own Retry-After hint."""
    base = min(float(settings.SMS_RETRY_BASE_SECONDS) * 2 ** max(attempt - 1, 0),
               float(settings.SMS_RETRY_MAX_SECONDS))
    delay = base + random.uniform(0, base * 0.25)
    return max(delay, float(retry_after or 0))


def _settle(message: Message, *, status: DeliveryStatus | str | None = None, raw_status: str = "",
            error: str | None = None, **fields: Any) -> bool:
    """Write the outcome of THIS attempt; a row that moved on meanwhile (staff) is left alone. The sweeper
    may have moved a slow attempt to needs_review: the real outcome still wins over that guess. A delivery
    `status` moves forward in the same statement (`forward_status_fields`), never back."""
    now = timezone.now()
    fields.setdefault("claimed_at", None)
    fields["updated_at"] = now
    if status is not None:  # this attempt's own fields (carrier_status, last_error) win over the move's
        fields = {**forward_status_fields(status, raw_status=raw_status, error=error, now=now), **fields}
    updated = Message.objects.filter(pk=message.pk, attempts=message.attempts,
                                     state__in=[State.SENDING, State.NEEDS_REVIEW]).update(**fields)
    if not updated:
        logger.warning("send outcome not recorded: the message changed meanwhile",
                       extra={"message_id": message.message_id, "outcome": fields.get("state")})
    return bool(updated)


def _fail(message: Message, reason: str) -> str:
    _settle(message, state=State.FAILED, last_error=reason[:500], next_attempt_at=None,
            status=DeliveryStatus.FAILED, error=reason)
    logger.info("SMS failed", extra={"message_id": message.message_id, "reason": reason})
    return "failed"


def _needs_review(message: Message, reason: str, **fields: Any) -> str:
    if _settle(message, state=State.NEEDS_REVIEW, last_error=reason[:500], next_attempt_at=None, **fields):
        journal(message.portal, JournalEntry.Kind.MESSAGE, f"SMS {message.message_id} needs review: {reason}",
                level=JournalEntry.Level.WARNING, details={"message": message.pk})
    return "needs_review"


@shared_task(bind=True, acks_late=True, max_retries=None)
def send_message(self: Any, message_pk: int) -> str:
    # Read first, then claim with a conditional UPDATE that also stores the normalized number: the claim
    # is what stops a second worker (it matches only the sendable state and the attempt count just read).
    message = Message.objects.select_related("portal", "account").filter(
        pk=message_pk, state__in=Message.SENDABLE).first()
    if message is None:
        return "not claimable"  # already sent, being sent by another worker, failed or cancelled
    portal = message.portal
    try:
        to, unusable = normalize_phone(message.recipient_raw, portal.phone_region or None), ""
    except InvalidPhoneNumber as exc:
        to, unusable = "", exc.reason
    now = timezone.now()
    claim: dict[str, Any] = {"recipient": to} if to else {}
    # The claim also settles the outbox: a task published twice (a dispatcher that died before clearing the
    # flag, the sweeper) finds the row claimed and does nothing, and a row being sent is owed no dispatch.
    claimed = Message.objects.filter(pk=message_pk, state__in=Message.SENDABLE, attempts=message.attempts).update(
        state=State.SENDING, attempts=F("attempts") + 1, claimed_at=now, next_attempt_at=None, updated_at=now,
        dispatch_pending=False, **claim)
    if claimed != 1:
        return "not claimable"
    message.state, message.attempts, message.claimed_at = State.SENDING, message.attempts + 1, now
    message.recipient = to or message.recipient
    with log_context(member_id=portal.member_id, sms_message_id=message.message_id):
        return _send_claimed(self, message, unusable)


def _send_claimed(task: Any, message: Message, unusable_number: str) -> str:
    portal, account = message.portal, message.account
    if not portal.is_operational:
        return _fail(message, f"portal is not active ({portal.get_status_display()})")
    if unusable_number:
        return _fail(message, f"invalid recipient number: {unusable_number}")
    to = message.recipient
    if is_opted_out(portal, to):
        return _fail(message, OPTED_OUT)
    try:
        carrier = account.get_carrier()
    except Exception as exc:  # bad stored config (e.g. undecryptable credentials): nothing was sent
        return _fail(message, f"provider account unusable: {type(exc).__name__}")

    try:
        result = carrier.send(to, message.body, reference=message.message_id)
    except SendOutcomeUnknown as exc:
        return _needs_review(message, f"carrier outcome unknown, not resent: {exc}",
                             carrier_message_id=exc.carrier_message_id or "")
    except CarrierError as exc:
        if not exc.retryable:
            return _fail(message, str(exc))
        return _retry_later(task, message, exc)
    except Exception as exc:  # a bug or an unexpected library error after the request may have left
        logger.exception("unexpected error while sending an SMS")
        return _needs_review(message, f"unexpected error while sending: {type(exc).__name__}")

    now = timezone.now()
    # One statement: the outcome of this attempt and the carrier's first status (forward only).
    _settle(message, state=State.HANDED_TO_CARRIER, carrier_message_id=result.carrier_message_id[:128], sent_at=now,
            carrier_status=result.raw_status[:64], cost=(result.cost or "")[:20], last_error="",
            next_poll_at=now + timedelta(seconds=settings.SMS_FIRST_POLL_SECONDS),
            status=result.status, raw_status=result.raw_status)
    return "sent"


def _retry_later(task: Any, message: Message, exc: CarrierError) -> str:
    now = timezone.now()
    delay = backoff_seconds(message.attempts, exc.retry_after)
    deadline = message.send_deadline_at or (
        message.created_at + timedelta(minutes=settings.SMS_SEND_DEADLINE_MINUTES))
    if now + timedelta(seconds=delay) > deadline:
        return _fail(message, f"carrier unavailable until the send deadline ({message.attempts} attempts): {exc}")
    if _settle(message, state=State.RETRYING, last_error=f"attempt {message.attempts}: {exc}"[:500],
               next_attempt_at=now + timedelta(seconds=delay)):
        raise task.retry(countdown=delay, max_retries=None)
    return "not recorded"


@shared_task
def sweep_stale_claims() -> int:
    """A message still `sending` long after its claim: the worker died, maybe after the carrier took it.
    Never resend blindly: a human checks with the carrier (admin: mark sent / mark failed / retry)."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=settings.SMS_CLAIM_TIMEOUT_SECONDS)
    stale = list(Message.objects.filter(state=State.SENDING, claimed_at__lt=cutoff)
                 .values_list("pk", "portal_id")[:1000])
    per_portal: Counter[int] = Counter()
    for pk, portal_id in stale:
        moved = Message.objects.filter(pk=pk, state=State.SENDING, claimed_at__lt=cutoff).update(
            state=State.NEEDS_REVIEW, claimed_at=None, updated_at=now,
            last_error="the worker stopped while sending; check with the carrier before resending")
        per_portal[portal_id] += moved
    for portal in Portal.objects.filter(pk__in=[p for p, n in per_portal.items() if n]):
        journal(portal, JournalEntry.Kind.MESSAGE,
                f"{per_portal[portal.pk]} SMS need review: the worker stopped while sending",
                level=JournalEntry.Level.WARNING)
    return sum(per_portal.values())


@shared_task
def redispatch_lost_messages() -> int:
    """Accepted or retrying messages whose task never ran (broker down at commit, worker lost the retry, an
    outbox row whose dispatcher died): dispatch them again, clearing the outbox flag in the same claim. The
    send task's claim makes a duplicate dispatch harmless."""
    now = timezone.now()
    late = now - timedelta(seconds=settings.SMS_REDISPATCH_AFTER_SECONDS)
    # Index sms_msg_waiting. `next_attempt_at` is set at accept time (and by a retry to its due time), so a
    # message waits at least the grace period before it counts as lost.
    # The send task's own claim (accepted/retrying -> sending) makes a late original task harmless.
    due = Message.objects.filter(state__in=Message.SENDABLE, next_attempt_at__lt=late)
    return redispatch_late(due, "next_attempt_at", send_message, now=now, claim={"dispatch_pending": False})


# -- senders --------------------------------------------------------------------------------------------


@shared_task(bind=True, max_retries=8, acks_late=True)
def sync_sender(self: Task, account_id: int) -> str:
    """Add / update / delete one account's sender after it changed."""
    account = ProviderAccount.objects.select_related("portal").filter(pk=account_id).first()
    if account is None:
        return "gone"
    portal = account.portal
    if not portal.is_operational:
        return "portal not active"  # the install step registers it when the portal comes back
    with log_context(member_id=portal.member_id):
        try:
            report = sync_account_sender(account, PortalClient(portal))
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.BINDING, f"SMS sender {account.code}: {exc.code} {exc.description}",
                    level=JournalEntry.Level.ERROR)
            return exc.code
        journal(portal, JournalEntry.Kind.BINDING, report)
        return report


@shared_task
def reconcile_all_senders() -> int:
    """Beat tick: the portals whose sender check is due (about once a day each, spread over the day, or at
    once after a trigger), many per task."""
    return dispatch_due(SENDERS_CHECK, reconcile_senders_chunk)


@shared_task(acks_late=True)
def reconcile_senders_chunk(portal_ids: list[int]) -> dict[str, int]:
    with_accounts = set(ProviderAccount.objects.filter(portal_id__in=portal_ids, is_active=True)
                        .values_list("portal_id", flat=True))

    def check(portal: Portal) -> str:
        if portal.pk not in with_accounts:
            return "no accounts"
        return _reconcile_and_journal(portal)

    def give_up(portal: Portal, exc: B24Error) -> None:
        journal(portal, JournalEntry.Kind.BINDING, f"SMS sender reconcile failed: {exc.code} {exc.description}",
                level=JournalEntry.Level.ERROR)

    return run_for_each(SENDERS_CHECK, portal_ids, check, give_up)


def _reconcile_and_journal(portal: Portal) -> str:
    try:
        report = reconcile_senders(portal, PortalClient(portal))
    except StepFailed as exc:
        journal(portal, JournalEntry.Kind.BINDING, f"SMS sender reconcile failed: {exc}",
                level=JournalEntry.Level.ERROR)
        return "failed"
    if report.added or report.deleted or report.updated:
        journal(portal, JournalEntry.Kind.BINDING, f"SMS senders repaired: {report}",
                details={"added": report.added, "updated": report.updated, "deleted": report.deleted})
    return str(report)


@shared_task(bind=True, max_retries=5, acks_late=True)
def reconcile_portal_senders(self: Task, portal_id: int) -> str:
    portal = Portal.objects.get(pk=portal_id)
    if not portal.is_operational:
        return "portal not active"
    with log_context(member_id=portal.member_id):
        try:
            return _reconcile_and_journal(portal)
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.BINDING, f"SMS sender reconcile failed: {exc.code} {exc.description}",
                    level=JournalEntry.Level.ERROR)
            return exc.code
