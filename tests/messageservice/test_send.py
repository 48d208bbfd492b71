"""The send task: claim once, normalize, consent, carrier, retries with backoff until a deadline,
needs_review when the outcome is unknown, and the sweeper for claims a dead worker left behind."""

from __future__ import annotations

from datetime import timedelta

import pytest
from celery.exceptions import Retry
from django.utils import timezone

from messageservice import accounts, sending, staff
from messageservice.consent import do_set_consent
from messageservice.models import Message, forward_status_fields
from messageservice.tasks import (
    OPTED_OUT,
    backoff_seconds,
    redispatch_lost_messages,
    send_message,
    sweep_stale_claims,
)
from tenants.journal import Actor
from tenants.models import JournalEntry

pytestmark = pytest.mark.django_db

PHONE = "+79991234567"


def accept(portal, to=PHONE, body="Hello", message_id=None) -> Message:
    message, created = sending.do_accept_message(
        portal, code="b24portal_sms", message_id=message_id or f"{Message.objects.count() + 1:032x}", to=to,
        body=body, bindings=[], author_user_id=None, origin="crm", meta={})
    assert created
    return message


def run(message: Message):
    result = send_message.apply(args=[message.pk]).get()
    message.refresh_from_db()
    return result


def test_a_message_goes_to_the_carrier_over_http_and_its_id_is_stored(sms_portal, fake_smsru):
    message = accept(sms_portal, to="8 (999) 123-45-67")  # national format, portal region RU
    assert run(message) == "sent"
    assert message.state == Message.State.HANDED_TO_CARRIER and message.attempts == 1
    assert message.recipient == PHONE
    assert message.carrier_message_id == fake_smsru.messages[0].id
    assert message.status == "queued" and message.carrier_status == "100"
    assert message.next_poll_at is not None and message.sent_at is not None and message.claimed_at is None
    assert fake_smsru.requests_for("send")[0].params["to"] == "79991234567"


def test_an_unusable_number_fails_without_calling_the_carrier(sms_portal, fake_smsru):
    message = accept(sms_portal, to="12345")
    assert run(message) == "failed"
    assert message.state == Message.State.FAILED and message.status == "failed"
    assert message.last_error.startswith("invalid recipient number")
    assert message.push_due and message.final_at is not None
    assert fake_smsru.request_count == 0


def test_an_opted_out_number_fails_with_recipient_opted_out(sms_portal, fake_smsru):
    do_set_consent(sms_portal, phone="89991234567", opted_in=False, user_id=3, source="widget")
    message = accept(sms_portal)
    assert run(message) == "failed"
    assert message.status == "failed" and message.last_error == OPTED_OUT == "recipient opted out"
    assert fake_smsru.request_count == 0


def test_a_carrier_that_is_down_is_retried_later_then_sends_exactly_once(sms_portal, fake_smsru):
    message = accept(sms_portal)
    fake_smsru.down = True
    with pytest.raises(Retry):  # the task asks Celery to run it again later; it never sleeps
        send_message.apply(args=[message.pk], throw=True)
    message.refresh_from_db()
    assert message.state == Message.State.RETRYING and message.attempts == 1
    assert "attempt 1" in message.last_error and message.next_attempt_at > timezone.now()

    fake_smsru.down = False
    assert run(message) == "sent"  # the retry, as the worker would run it
    assert run(message) == "not claimable"  # a duplicate delivery of the task does nothing
    assert message.attempts == 2 and message.state == Message.State.HANDED_TO_CARRIER
    assert len(fake_smsru.messages) == 1


def test_retries_stop_at_the_send_deadline(sms_portal, fake_smsru):
    message = accept(sms_portal)
    Message.objects.filter(pk=message.pk).update(send_deadline_at=timezone.now() + timedelta(seconds=1))
    fake_smsru.down = True
    assert run(message) == "failed"
    assert message.status == "failed" and "send deadline" in message.last_error


def test_a_permanent_carrier_error_fails_the_message_with_the_reason(sms_portal, fake_smsru):
    fake_smsru.fail_next(1, "stop_list")
    message = accept(sms_portal)
    assert run(message) == "failed"
    assert message.status == "failed" and "209" in message.last_error


def test_an_unknown_send_outcome_needs_review_and_is_never_resent(sms_portal, fake_smsru):
    fake_smsru.fail_next(1, "http_500")  # the carrier may have queued it before failing
    message = accept(sms_portal)
    assert run(message) == "needs_review"
    assert message.state == Message.State.NEEDS_REVIEW and message.status is None
    assert run(message) == "not claimable"
    assert fake_smsru.request_count == 1
    assert JournalEntry.objects.filter(portal=sms_portal, kind="message", level="warning").exists()


def test_a_message_claimed_by_one_worker_is_not_sent_by_another(sms_portal, fake_smsru):
    message = accept(sms_portal)
    Message.objects.filter(pk=message.pk).update(state=Message.State.SENDING, claimed_at=timezone.now())
    assert run(message) == "not claimable"
    assert fake_smsru.request_count == 0


def test_a_stale_sending_claim_is_swept_to_needs_review(sms_portal, fake_smsru, settings):
    settings.SMS_CLAIM_TIMEOUT_SECONDS = 60
    stale, fresh = accept(sms_portal), accept(sms_portal)
    Message.objects.filter(pk=stale.pk).update(state="sending", claimed_at=timezone.now() - timedelta(minutes=5))
    Message.objects.filter(pk=fresh.pk).update(state="sending", claimed_at=timezone.now())

    assert sweep_stale_claims.delay().get() == 1
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.state == Message.State.NEEDS_REVIEW and "worker stopped" in stale.last_error
    assert fresh.state == Message.State.SENDING
    assert fake_smsru.request_count == 0


def test_a_lost_dispatch_is_dispatched_again(sms_portal, fake_smsru, settings):
    settings.SMS_REDISPATCH_AFTER_SECONDS = 60
    message = accept(sms_portal)  # its on-commit dispatch never ran (as if the broker was down)
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - timedelta(minutes=5))
    assert redispatch_lost_messages.delay().get() == 1
    message.refresh_from_db()
    assert message.state == Message.State.HANDED_TO_CARRIER and len(fake_smsru.messages) == 1


def test_the_delivery_status_only_moves_forward(sms_portal):
    message = accept(sms_portal)
    assert message.advance_status("sent", raw_status="102")
    assert message.advance_status("delivered", raw_status="103")
    assert not message.advance_status("sent", raw_status="102")  # a late "sent"
    assert not message.advance_status("undelivered")  # one final never replaces another
    message.refresh_from_db()
    assert message.status == "delivered" and message.carrier_status == "103"
    assert message.final_at is not None and message.next_poll_at is None and message.push_due


def test_sending_a_message_takes_four_statements(sms_portal, fake_smsru, django_assert_num_queries):
    message = accept(sms_portal, to="8 (999) 123-45-67")
    # read, claim (with the normalized number), opt-out check, outcome with the first status
    with django_assert_num_queries(4):
        assert send_message.apply(args=[message.pk]).get() == "sent"
    message.refresh_from_db()
    assert message.recipient == PHONE and message.status == "queued" and message.push_due


def test_the_status_in_a_send_outcome_only_moves_forward(sms_portal):
    fresh, delivered = accept(sms_portal), accept(sms_portal)
    Message.objects.filter(pk=delivered.pk).update(status="delivered", pushed_status="delivered", push_due=False)
    Message.objects.filter(pk__in=[fresh.pk, delivered.pk]).update(**forward_status_fields("sent", raw_status="102"))
    fresh.refresh_from_db()
    delivered.refresh_from_db()
    assert fresh.status == "sent" and fresh.carrier_status == "102" and fresh.push_due
    assert delivered.status == "delivered" and delivered.carrier_status == "" and not delivered.push_due


def test_advancing_a_status_marks_the_push_in_the_same_statement(sms_portal, django_assert_num_queries):
    crm, widget, told = accept(sms_portal), accept(sms_portal), accept(sms_portal)
    Message.objects.filter(pk=widget.pk).update(origin=Message.Origin.WIDGET)
    Message.objects.filter(pk=told.pk).update(pushed_status="delivered")
    with django_assert_num_queries(1):
        assert Message.objects.filter(pk__in=[crm.pk, widget.pk, told.pk]).advance_status("delivered") == 3
    due = dict(Message.objects.filter(pk__in=[crm.pk, widget.pk, told.pk]).values_list("pk", "push_due"))
    assert due == {crm.pk: True, widget.pk: False, told.pk: False}


def test_backoff_grows_exponentially_with_jitter_and_respects_retry_after(settings):
    settings.SMS_RETRY_BASE_SECONDS, settings.SMS_RETRY_MAX_SECONDS = 10, 600
    assert 10 <= backoff_seconds(1) <= 12.5
    assert 40 <= backoff_seconds(3) <= 50
    assert 600 <= backoff_seconds(20) <= 750
    assert backoff_seconds(1, retry_after=90) == 90


def test_a_test_sms_goes_through_the_queue_and_the_carrier(sms_portal, sms_account, fake_smsru,
                                                           django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        message = accounts.do_send_test_sms(sms_portal, sms_account, to="+7 999 123-45-67", actor=Actor("staff", "support"))
    message.refresh_from_db()
    assert message.origin == "test" and message.state == Message.State.HANDED_TO_CARRIER and not message.push_due
    assert fake_smsru.messages[0].to == "79991234567"
    assert JournalEntry.objects.filter(portal=sms_portal, kind="staff", message__contains="test SMS").exists()


def test_staff_can_retry_a_failed_message_and_it_is_sent(sms_portal, fake_smsru, django_capture_on_commit_callbacks):
    fake_smsru.fail_next(1, "unavailable")
    message = accept(sms_portal)
    Message.objects.filter(pk=message.pk).update(send_deadline_at=timezone.now())
    assert run(message) == "failed"
    with django_capture_on_commit_callbacks(execute=True):
        assert staff.do_retry_message(message, actor=Actor("staff", "support"))
    message.refresh_from_db()
    assert message.state == Message.State.HANDED_TO_CARRIER and message.status == "queued" and message.attempts == 2
    assert not staff.do_retry_message(message, actor=Actor("staff", "support"))  # sent: not retryable
