"""Queues by urgency with a real broker and a real worker: however much maintenance is queued, the SMS
worker (the Procfile's `worker-sms`: `-Q sms`, concurrency 2) sends a customer's message at once.

Asserted on order and queue contents, never on durations: the message is handed to the carrier while every
one of the thousands of reconciles queued *before* it is still waiting in `maintenance`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from celery.contrib.testing.worker import start_worker

from b24portal.celery import app
from messageservice.models import Message
from messageservice.tasks import reconcile_portal_senders
from tenants.models import Portal
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24

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


def wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def sms_worker(sms_portal: Portal, settings) -> Iterator[None]:
    """A real worker consuming like the Procfile's SMS worker, on the test Redis database
    (TEST_REDIS_URL; flushed before every test)."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        with start_worker(app, pool="threads", concurrency=2, queues=["sms"], perform_ping_check=False,
                          loglevel="WARNING", shutdown_timeout=10):
            yield
    finally:
        app.conf.task_always_eager = True
        purge("maintenance")


def test_a_message_is_sent_while_thousands_of_reconciles_wait_in_the_maintenance_queue(
    sms_portal, sms_worker, fake_portal, fake_smsru, client
):
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


def test_in_one_queue_the_same_flood_would_stand_before_the_message():
    """The counterfactual the routes prevent: were reconciles and sends in one queue, the send would be
    delivered to a worker only after the FLOOD reconciles ahead of it (FIFO)."""
    route = app.amqp.router.route
    assert route({}, "messageservice.tasks.reconcile_portal_senders")["queue"].name == "maintenance"
    assert route({}, "messageservice.tasks.send_message")["queue"].name == "sms"
