"""Delivery status: polling the carrier, forward-only moves, the TTL policy, and pushing statuses to
Bitrix24 in batches — against the fake SMS.ru and the fake portal over real HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messageservice import delivery
from messageservice.models import Message
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24, status_updates

from .conftest import SENDER_CODE

pytestmark = pytest.mark.django_db


def accept(client, fake_portal, capture, n: int = 1, to: str = "+79991234567") -> list[Message]:
    """Messages as Bitrix24 hands them to our handler, sent to the fake carrier (eager Celery)."""
    ids = []
    for i in range(n):
        payload = send_from_bitrix24(fake_portal, SENDER_CODE, to, f"code {i}")
        with capture(execute=True):
            response = client.post(handler_path(fake_portal, SENDER_CODE), data=payload)
        assert response.status_code == 200, response.content
        ids.append(payload["message_id"])
    return list(Message.objects.filter(message_id__in=ids).order_by("pk"))


def make_due(*messages: Message) -> None:
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(next_poll_at=timezone.now() - timedelta(seconds=1))


def test_a_poll_fetches_many_statuses_in_one_carrier_request(client, sms_portal, fake_portal, fake_smsru,
                                                            django_capture_on_commit_callbacks):
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=5)
    fake_smsru.deliver_all()
    make_due(*messages)
    status_requests = len(fake_smsru.requests_for("status"))

    delivery.poll_account.apply(args=[messages[0].account_id])

    assert len(fake_smsru.requests_for("status")) == status_requests + 1
    for message in Message.objects.filter(pk__in=[m.pk for m in messages]):
        assert message.status == "delivered" and message.carrier_status == "103"
        assert message.final_at is not None and message.next_poll_at is None and message.push_due


def test_statuses_only_move_forward(client, sms_portal, fake_portal, fake_smsru, django_capture_on_commit_callbacks):
    (message,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    fake_smsru.set_status(message.carrier_message_id, 103)
    make_due(message)
    delivery.poll_account.apply(args=[message.account_id])

    fake_smsru.set_status(message.carrier_message_id, 102)  # a late "sent" after "delivered"
    Message.objects.filter(pk=message.pk).update(next_poll_at=timezone.now())
    delivery.poll_account.apply(args=[message.account_id])

    message.refresh_from_db()
    assert message.status == "delivered"


def test_a_message_not_yet_final_is_polled_again_later_with_backoff(client, sms_portal, fake_portal, fake_smsru,
                                                                   django_capture_on_commit_callbacks):
    (message,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    fake_smsru.set_status(message.carrier_message_id, 102)
    delays = []
    for _ in range(3):
        make_due(message)
        before = timezone.now()
        delivery.poll_account.apply(args=[message.account_id])
        message.refresh_from_db()
        delays.append((message.next_poll_at - before).total_seconds())
    assert message.status == "sent" and message.final_at is None
    assert delays[0] < delays[1] < delays[2]


def test_a_carrier_error_backs_off_the_chunk_without_touching_statuses(client, sms_portal, fake_portal, fake_smsru,
                                                                      django_capture_on_commit_callbacks):
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=3)
    fake_smsru.deliver_all()
    make_due(*messages)
    fake_smsru.down = True
    try:
        delivery.poll_account.apply(args=[messages[0].account_id])
    finally:
        fake_smsru.down = False

    for message in Message.objects.filter(pk__in=[m.pk for m in messages]):
        assert message.status != "delivered"
        assert message.next_poll_at > timezone.now()


def test_after_the_ttl_a_message_gets_a_final_status_by_policy(client, sms_portal, fake_portal, fake_smsru,
                                                              django_capture_on_commit_callbacks, settings):
    settings.SMS_STATUS_TTL_HOURS = 48
    sent, queued = accept(client, fake_portal, django_capture_on_commit_callbacks, n=2)
    old = timezone.now() - timedelta(hours=49)
    Message.objects.filter(pk=sent.pk).update(status="sent", sent_at=old, next_poll_at=timezone.now())
    Message.objects.filter(pk=queued.pk).update(status="queued", sent_at=old, next_poll_at=timezone.now())

    delivery.poll_account.apply(args=[sent.account_id])

    sent.refresh_from_db()
    queued.refresh_from_db()
    assert sent.status == "sent" and sent.final_at and sent.next_poll_at is None  # no DLR: stays "sent"
    assert queued.status == "undelivered" and queued.final_at and queued.push_due
    assert "TTL" in queued.last_error


def test_changed_statuses_reach_bitrix24_in_one_batch(client, sms_portal, fake_portal, fake_smsru,
                                                     django_capture_on_commit_callbacks):
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=7)
    fake_smsru.deliver_all()
    make_due(*messages)
    delivery.poll_account.apply(args=[messages[0].account_id])
    batches_before = fake_portal.count("batch")

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    assert fake_portal.count("batch") == batches_before + 1
    for message in messages:
        updates = status_updates(fake_portal, message.message_id)
        assert updates[-1]["STATUS"] == "delivered" and updates[-1]["CODE"] == SENDER_CODE
    assert not Message.objects.filter(pk__in=[m.pk for m in messages], push_due=True).exists()
    assert set(Message.objects.filter(pk__in=[m.pk for m in messages]).values_list("pushed_status", flat=True)) == {
        "delivered"}


def test_120_statuses_go_in_three_batch_requests(client, sms_portal, fake_portal, django_capture_on_commit_callbacks):
    (template,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    now = timezone.now()
    clones = []
    for i in range(119):
        payload = send_from_bitrix24(fake_portal, SENDER_CODE, "+79991234567", f"bulk {i}")
        clones.append(Message(portal=sms_portal, account=template.account, carrier=template.carrier,
                              message_id=payload["message_id"], origin="crm", recipient_raw="+79991234567",
                              recipient="+79991234567", body="x", state="sent_to_carrier", status="delivered",
                              status_changed_at=now, push_due=True))
    Message.objects.bulk_create(clones)
    Message.objects.filter(pk=template.pk).update(status="delivered", push_due=True, status_changed_at=now)
    batches_before = fake_portal.count("batch")

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    assert fake_portal.count("batch") - batches_before == 3
    assert not Message.objects.filter(portal=sms_portal, push_due=True).exists()


def test_a_backward_status_is_never_pushed(client, sms_portal, fake_portal, django_capture_on_commit_callbacks):
    (message,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    Message.objects.filter(pk=message.pk).update(status="sent", pushed_status="delivered", push_due=True)
    updates_before = len(status_updates(fake_portal, message.message_id))

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    assert len(status_updates(fake_portal, message.message_id)) == updates_before
    assert not Message.objects.get(pk=message.pk).push_due


def test_message_not_found_stops_pushing_that_message_and_is_journaled(client, sms_portal, fake_portal,
                                                                      django_capture_on_commit_callbacks):
    (known,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    now = timezone.now()
    unknown = Message.objects.create(portal=sms_portal, account=known.account, carrier=known.carrier,
                                     message_id="f" * 32, origin="crm", recipient_raw="+79991234567", body="x",
                                     state="sent_to_carrier", status="delivered", status_changed_at=now, push_due=True)
    Message.objects.filter(pk=known.pk).update(status="delivered", push_due=True, status_changed_at=now)

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    unknown.refresh_from_db()
    assert not unknown.push_due and "not found" in unknown.last_error
    assert Message.objects.get(pk=known.pk).pushed_status == "delivered"
    assert sms_portal.journal.filter(message__contains="does not know 1 message").exists()


def test_a_rate_limited_push_is_retried_later_and_loses_nothing(client, sms_portal, fake_portal, settings,
                                                               django_capture_on_commit_callbacks):
    from celery.exceptions import Retry

    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=3)
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(status="delivered", push_due=True)
    settings.B24_RATE_TASK_MAX_WAIT = 0
    fake_portal.fail_next("batch", "QUERY_LIMIT_EXCEEDED", "Too many requests", 503)

    with pytest.raises(Retry):
        delivery.push_portal_statuses.apply(args=[sms_portal.pk], throw=True)
    assert Message.objects.filter(pk__in=[m.pk for m in messages], push_due=True).count() == 3

    settings.B24_RATE_TASK_MAX_WAIT = 30
    delivery.push_portal_statuses.apply(args=[sms_portal.pk])
    assert all(status_updates(fake_portal, m.message_id)[-1]["STATUS"] == "delivered" for m in messages)
    assert not Message.objects.filter(pk__in=[m.pk for m in messages], push_due=True).exists()


def test_an_expired_token_mid_push_is_refreshed_and_nothing_is_lost(client, sms_portal, fake_portal,
                                                                   django_capture_on_commit_callbacks):
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=2)
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(status="delivered", push_due=True)
    fake_portal.expire_access_tokens()

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    assert all(status_updates(fake_portal, m.message_id)[-1]["STATUS"] == "delivered" for m in messages)


def test_widget_messages_are_never_pushed(client, sms_portal, fake_portal, django_capture_on_commit_callbacks):
    (message,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    Message.objects.filter(pk=message.pk).update(origin="widget", status="delivered", push_due=True)
    batches_before = fake_portal.count("batch")

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    assert fake_portal.count("batch") == batches_before
    assert not Message.objects.get(pk=message.pk).push_due


def test_dispatchers_start_one_task_per_account_and_per_portal(client, sms_portal, fake_portal, fake_smsru,
                                                               django_capture_on_commit_callbacks):
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=3)
    fake_smsru.deliver_all()
    make_due(*messages)

    assert delivery.dispatch_status_polls.apply().get() == 1  # one account with due messages
    assert delivery.dispatch_status_pushes.apply().get() == 1  # one portal with statuses to push
    assert all(status_updates(fake_portal, m.message_id)[-1]["STATUS"] == "delivered" for m in messages)


def test_the_admin_shows_delivery_statistics_with_a_chart(client, sms_portal, fake_portal, fake_smsru,
                                                          django_capture_on_commit_callbacks, admin_client):
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=3)
    fake_smsru.deliver_all()
    make_due(*messages)
    delivery.poll_account.apply(args=[messages[0].account_id])

    page = admin_client.get("/admin/messageservice/message/stats/")
    body = page.content.decode()
    assert page.status_code == 200
    assert "<svg" in body and "delivered" in body
    assert sms_portal.domain in body and "100.0%" in body  # 3 of 3 final messages delivered
    filtered = admin_client.get(f"/admin/messageservice/message/stats/?portal={sms_portal.pk}&carrier=smsru&days=7")
    assert filtered.status_code == 200 and "3 message(s)" in filtered.content.decode()
    assert admin_client.get("/admin/messageservice/message/stats/?days=x&portal=abc&carrier=<x>").status_code == 200


def test_the_repush_admin_action_sends_the_status_again(client, sms_portal, fake_portal, fake_smsru,
                                                        django_capture_on_commit_callbacks, admin_client):
    (message,) = accept(client, fake_portal, django_capture_on_commit_callbacks)
    Message.objects.filter(pk=message.pk).update(status="delivered", pushed_status="delivered", push_due=False)
    before = len(status_updates(fake_portal, message.message_id))

    admin_client.post("/admin/messageservice/message/", {"action": "repush_status", "_selected_action": [message.pk]})
    delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    assert len(status_updates(fake_portal, message.message_id)) == before + 1
    assert sms_portal.journal.filter(message__contains="re-push").exists()


def test_a_transient_per_command_error_is_not_resent_within_the_same_run(client, sms_portal, fake_portal,
                                                                        django_capture_on_commit_callbacks):
    from tests.fakes.bitrix24 import B24Error as FakeB24Error

    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=2)
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(status="delivered", push_due=True)
    stuck = messages[0].message_id

    def flaky_status_update(portal, params, ctx):  # Bitrix24 answers this one command with a 5xx code
        if params.get("MESSAGE_ID") == stuck:
            raise FakeB24Error("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
        return original(portal, params, ctx)

    original = fake_portal.method_spec("messageservice.message.status.update").handler
    fake_portal.register_method("messageservice.message.status.update", flaky_status_update, scope="messageservice")
    batches_before = fake_portal.count("batch")

    delivery.push_portal_statuses.apply(args=[sms_portal.pk])  # before the fix: re-sent in a tight loop

    assert fake_portal.count("batch") - batches_before == 1  # tried once, not 20 times
    assert Message.objects.get(message_id=stuck).push_due
    assert status_updates(fake_portal, messages[1].message_id)[-1]["STATUS"] == "delivered"


def test_a_batch_of_50_results_is_written_in_one_statement(client, sms_portal, fake_portal, settings,
                                                           django_capture_on_commit_callbacks):
    """Set-based push bookkeeping: one UPDATE per batch of 50 whatever the outcomes, and each right."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from tests.fakes.b24_messageservice import state
    from tests.fakes.bitrix24 import B24Error as FakeB24Error

    settings.SMS_PUSH_MAX_ATTEMPTS = 2
    messages = accept(client, fake_portal, django_capture_on_commit_callbacks, n=delivery.BATCH_SIZE)
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(status="delivered", push_due=True)
    unknown, refused, refused_last = messages[0], messages[1], messages[2]
    Message.objects.filter(pk=refused_last.pk).update(push_attempts=1)
    with fake_portal.lock:
        del state(fake_portal)["messages"][unknown.message_id]  # the portal deleted it

    def status_update(portal, params, ctx):
        if params.get("MESSAGE_ID") in (refused.message_id, refused_last.message_id):
            raise FakeB24Error("ERROR_STATUS", "Wrong status", 400)
        return original(portal, params, ctx)

    original = fake_portal.method_spec("messageservice.message.status.update").handler
    fake_portal.register_method("messageservice.message.status.update", status_update, scope="messageservice")

    with CaptureQueriesContext(connection) as queries:
        delivery.push_portal_statuses.apply(args=[sms_portal.pk])

    table = Message._meta.db_table
    writes = [q["sql"] for q in queries.captured_queries
              if table in q["sql"] and q["sql"].lstrip().upper().startswith(("UPDATE", "WITH"))]
    assert len(writes) == 1, writes  # one batch of 50: one statement

    rows = {m.pk: m for m in Message.objects.filter(pk__in=[m.pk for m in messages])}
    pushed = [rows[m.pk] for m in messages[3:]]
    assert all(not m.push_due and m.pushed_status == "delivered" and m.pushed_at and m.push_attempts == 0
               for m in pushed)
    assert all(status_updates(fake_portal, m.message_id)[-1]["STATUS"] == "delivered" for m in pushed)
    assert not rows[unknown.pk].push_due and rows[unknown.pk].last_error == "Bitrix24: message not found"
    assert rows[refused.pk].push_due and rows[refused.pk].push_attempts == 1
    assert rows[refused.pk].last_error == "Bitrix24 refused status delivered: ERROR_STATUS"
    assert not rows[refused_last.pk].push_due and rows[refused_last.pk].push_attempts == 2  # gave up
    assert sms_portal.journal.filter(message__contains="does not know 1 message").exists()
    assert sms_portal.journal.filter(message__contains="kept refusing the status of 1 message").exists()


def test_a_status_that_moved_on_during_the_push_stays_due(client, sms_portal, fake_portal,
                                                          django_capture_on_commit_callbacks):
    from oauth.client import BatchResult

    moved, same, silent = accept(client, fake_portal, django_capture_on_commit_callbacks, n=3)
    Message.objects.filter(pk__in=[moved.pk, same.pk]).update(status="sent", push_due=True, push_attempts=1)
    Message.objects.filter(pk=silent.pk).update(status="queued", pushed_status="sent", push_due=True)
    rows = list(Message.objects.filter(pk__in=[moved.pk, same.pk]).values(
        "pk", "message_id", "status", "pushed_status", "origin", "account__code", "push_attempts"))
    Message.objects.filter(pk=moved.pk).update(status="delivered")  # the poller, meanwhile

    result = BatchResult(results={f"m{moved.pk}": True, f"m{same.pk}": True}, errors={})
    assert delivery._record_push_results(sms_portal, rows, result,
                                         [delivery.Outcome(silent.pk, "silent", "queued")]) == 2

    moved.refresh_from_db()
    same.refresh_from_db()
    silent.refresh_from_db()
    assert moved.push_due and moved.pushed_status == "sent" and moved.pushed_at and moved.push_attempts == 1
    assert not same.push_due and same.pushed_status == "sent" and same.push_attempts == 0
    assert not silent.push_due and silent.pushed_status == "sent"
