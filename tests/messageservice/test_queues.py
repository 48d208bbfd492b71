"""Queues by urgency with a real broker and a real worker consuming like the Procfile's `worker-sms`
(`-Q sms,sms_status`, concurrency 2):
- however much maintenance is queued, a customer's message is sent at once;
- however many sends are queued, a delivery status is polled from the carrier and pushed to Bitrix24 at
  once: status work has a queue of its own, and the Redis transport takes the next message from the other
  queue after each one (kombu's round-robin queue cycle), so it interleaves with the sends.

Asserted on order and queue contents, never on durations: the message is handed to the carrier while every
one of the thousands of reconciles queued *before* it is still waiting in `maintenance`, and Bitrix24
hears "delivered" while most of the thousands of sends queued before the poll are still waiting in `sms`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from b24portal.celery import app
from messageservice.delivery import dispatch_status_polls
from messageservice.models import Message
from messageservice.tasks import reconcile_portal_senders, send_message
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24, status_updates
from tests.waiting import wait_for

from .conftest import SENDER_CODE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

FLOOD = 3000


def queued(queue: str) -> int:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        try:
            return channel.queue_declare(queue, passive=True).message_count
        except channel.connection.channel_errors:
            return 0


def purge(queue: str) -> None:
    with app.connection_for_write() as connection:
        connection.default_channel.queue_purge(queue)



#: the Procfile's and docker-compose's `worker-sms`
SMS_WORKER_QUEUES = ["sms", "sms_status"]


@contextmanager
def sms_worker(settings: Any) -> Iterator[None]:
    """A real worker consuming like the Procfile's SMS worker, on the test Redis database
    (TEST_REDIS_URL; flushed before every test)."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        with start_worker(app, pool="threads", concurrency=2, queues=SMS_WORKER_QUEUES, perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=10):
            yield
    finally:
        app.conf.task_always_eager = True
        for queue in ("maintenance", *SMS_WORKER_QUEUES):
            purge(queue)


def test_a_message_is_sent_while_thousands_of_reconciles_wait_in_the_maintenance_queue(
    sms_portal, fake_portal, fake_smsru, client, settings
):
    with sms_worker(settings):
        # A beat tick at scale: one sender reconcile per portal, all queued before the customer's message.
        with app.producer_or_acquire() as producer:
            for _ in range(FLOOD):
                reconcile_portal_senders.apply_async((sms_portal.pk,), producer=producer)
        assert queued("maintenance") == FLOOD
        assert queued("sms") == 0

        payload = send_from_bitrix24(fake_portal, SENDER_CODE, "+79991234567", "your code 1234")
        assert client.post(handler_path(fake_portal, SENDER_CODE), data=payload).status_code == 200

        def sent() -> bool:
            return Message.objects.filter(message_id=payload["message_id"],
                                          state=Message.State.HANDED_TO_CARRIER).exists()

        assert wait_for(sent), Message.objects.values("state", "last_error").first()
        # Handed to the carrier while not one of the reconciles queued ahead of it has run.
        assert queued("maintenance") == FLOOD
        assert len(fake_smsru.messages) == 1
        assert queued("sms") == 0


def test_a_delivery_status_reaches_bitrix24_while_most_of_thousands_of_queued_sends_still_wait(
    sms_portal, fake_portal, fake_smsru, client, settings, django_capture_on_commit_callbacks
):
    # A message sent earlier (eager Celery: handed to the fake carrier now), which the carrier has since
    # delivered, due for its status poll.
    payload = send_from_bitrix24(fake_portal, SENDER_CODE, "+79991234567", "your code 1234")
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(handler_path(fake_portal, SENDER_CODE), data=payload).status_code == 200
    message = Message.objects.get(message_id=payload["message_id"])
    assert message.state == Message.State.HANDED_TO_CARRIER
    fake_smsru.deliver_all()
    Message.objects.filter(pk=message.pk).update(next_poll_at=timezone.now() - timedelta(seconds=1))

    # Bitrix24 hears the status: note how many sends are still waiting in the broker at that moment.
    sends_waiting_when_pushed: list[int] = []
    original = fake_portal.method_spec("messageservice.message.status.update").handler

    def status_update(portal: Any, params: dict[str, Any], ctx: Any) -> Any:
        sends_waiting_when_pushed.append(queued("sms"))
        return original(portal, params, ctx)

    fake_portal.register_method("messageservice.message.status.update", status_update, scope="messageservice")

    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    try:
        # A send burst: FLOOD send tasks queued before the beat's poll tick (cheap ones: ids of no message,
        # each a single SELECT in the worker), then the tick itself. Nothing consumes yet.
        with app.producer_or_acquire() as producer:
            for pk in range(10**9, 10**9 + FLOOD):
                send_message.apply_async((pk,), producer=producer)
        dispatch_status_polls.delay()
        assert queued("sms") == FLOOD
        assert queued("sms_status") == 1
    finally:
        app.conf.task_always_eager = True

    with sms_worker(settings):
        # The chain beat tick → poll_accounts → carrier → push_portal_statuses → Bitrix24, all on sms_status.
        assert wait_for(lambda: status_updates(fake_portal, message.message_id)), queued("sms")
        assert status_updates(fake_portal, message.message_id)[-1]["STATUS"] == "delivered"
        # In one FIFO queue the tick would have run after all FLOOD sends; here most are still queued.
        assert len(sends_waiting_when_pushed) == 1
        assert sends_waiting_when_pushed[0] > FLOOD // 2, sends_waiting_when_pushed
        assert queued("sms_status") == 0

    message.refresh_from_db()
    assert message.status == "delivered" and message.pushed_status == "delivered" and not message.push_due


def test_in_one_queue_the_same_flood_would_stand_before_the_message():
    """The counterfactual the routes prevent: were reconciles and sends in one queue, the send would be
    delivered to a worker only after the FLOOD reconciles ahead of it (FIFO)."""
    route = app.amqp.router.route
    assert route({}, "messageservice.tasks.reconcile_portal_senders")["queue"].name == "maintenance"
    assert route({}, "messageservice.tasks.send_message")["queue"].name == "sms"
    assert route({}, "messageservice.delivery.dispatch_status_polls")["queue"].name == "sms_status"
