"""Staff actions on messages (admin): retry, re-push, cancel, mark sent or failed. Each is a
conditional UPDATE on the message's pipeline state (a row that moved on meanwhile is left alone),
journaled with the actor; the delivery status moves through `Message.advance_status` only.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from tenants.journal import Actor, journal
from tenants.models import JournalEntry

from .models import Message
from .status import DeliveryStatus
from .tasks import send_message

State = Message.State


def do_repush_status(message: Message, *, actor: Actor) -> bool:
    """Send the current status to Bitrix24 again (e.g. after a portal restored a deleted message). Only
    messages Bitrix24 knows and that have a status; the pusher then treats it as never pushed."""
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, origin__in=Message.BITRIX24_ORIGINS,
                                         status__isnull=False).update(pushed_status="", push_due=True,
                                                                      push_attempts=0)
        if updated:
            journal(message.portal, JournalEntry.Kind.STAFF, f"SMS {message.message_id}: status re-push queued",
                    actor=actor, details={"message": message.pk, "status": message.status})
    return bool(updated)


def do_retry_message(message: Message, *, actor: Actor) -> bool:
    """Send a failed or needs-review message again (a human decided it was not sent). The delivery
    status starts over, so Bitrix24 will hear the new outcome even after an earlier `failed`."""
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, state__in=[State.FAILED, State.NEEDS_REVIEW]).update(
            state=State.ACCEPTED, claimed_at=None, next_attempt_at=now, last_error="", status=None,
            carrier_status="", carrier_message_id="", final_at=None, next_poll_at=None, push_due=False,
            pushed_status="", status_changed_at=now, updated_at=now,
            send_deadline_at=now + timedelta(minutes=settings.SMS_SEND_DEADLINE_MINUTES))
        if not updated:
            return False
        journal(message.portal, JournalEntry.Kind.STAFF, f"SMS {message.message_id}: send retried", actor=actor,
                details={"message": message.pk, "previous_state": message.state})
        pk = message.pk
        dispatch_on_commit(send_message, pk)
    return True


def _finish(message: Message, *, from_states: list[str], state: str, status: DeliveryStatus | None,
            reason: str, actor: Actor) -> bool:
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, state__in=from_states).update(
            state=state, claimed_at=None, last_error=reason[:500], updated_at=now,
            **({"next_poll_at": now} if state == State.HANDED_TO_CARRIER and message.carrier_message_id else {}))
        if not updated:
            return False
        if status is not None:
            message.advance_status(status, error=reason, now=now)
        journal(message.portal, JournalEntry.Kind.STAFF, f"SMS {message.message_id}: {reason}", actor=actor,
                details={"message": message.pk, "previous_state": message.state, "state": state})
    return True


def do_mark_sent(message: Message, *, actor: Actor) -> bool:
    """Needs review → a human checked with the carrier that it went out."""
    return _finish(message, from_states=[State.NEEDS_REVIEW], state=State.HANDED_TO_CARRIER, status=DeliveryStatus.SENT,
                   reason="marked as sent by support", actor=actor)


def do_mark_failed(message: Message, *, actor: Actor, reason: str = "marked as failed by support") -> bool:
    return _finish(message, from_states=[State.NEEDS_REVIEW], state=State.FAILED, status=DeliveryStatus.FAILED,
                   reason=reason, actor=actor)


def do_cancel_message(message: Message, *, actor: Actor) -> bool:
    """Only before the carrier has it (accepted or waiting to retry); Bitrix24 hears `failed`."""
    return _finish(message, from_states=[State.ACCEPTED, State.RETRYING], state=State.CANCELLED,
                   status=DeliveryStatus.FAILED, reason="cancelled by support", actor=actor)
