"""The handler's outbox (issue 11): the handler stores the message as owed a dispatch and publishes nothing;
the SMS worker's dispatcher, woken by PostgreSQL NOTIFY, publishes each owed send once.

Real PostgreSQL, the test Redis database as broker (flushed before every test) and real workers
(`start_worker`). Waits are polls with generous deadlines; nothing is asserted on durations.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker
from django.db import transaction
from django.utils import timezone

from b24portal.celery import app
from messageservice.models import Message
from messageservice.outbox import DispatcherStep, OutboxDispatcher, drain
from messageservice.tasks import redispatch_lost_messages
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24
from tests.waiting import wait_for

from .conftest import SENDER_CODE

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PHONE = "+79991234567"
STEP = DispatcherStep.name  # "messageservice.outbox.DispatcherStep"
ROOT = Path(__file__).resolve().parents[2]



def queued(queue: str = "sms") -> int:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        try:
            return int(channel.queue_declare(queue, passive=True).message_count)
        except channel.connection.channel_errors:
            return 0


def _use_broker(url: str) -> None:
    app.conf.broker_url = url
    app._pool = None  # connections to the previous broker are not reused
    app.amqp._producer_pool = None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens there once the socket is closed


@pytest.fixture
def not_eager(settings: Any) -> Iterator[None]:
    """Celery as in production: the handler only stores, tasks go to the test Redis database."""
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    _use_broker(settings.CELERY_BROKER_URL)
    try:
        yield
    finally:
        app.conf.task_always_eager = True
        _use_broker(settings.CELERY_BROKER_URL)


@contextmanager
def worker(queues: list[str]) -> Iterator[Any]:
    with start_worker(app, pool="threads", concurrency=2, queues=queues, perform_ping_check=False,
                      loglevel="WARNING", shutdown_timeout=10) as controller:
        yield controller


def dispatcher_of(controller: Any) -> OutboxDispatcher | None:
    step = controller.blueprint.steps.get(STEP)
    return None if step is None else step.obj


def post_message(client: Any, fake: Any, body: str = "your code 1234", **kwargs: Any) -> dict[str, Any]:
    payload = send_from_bitrix24(fake, SENDER_CODE, PHONE, body, **kwargs)
    response = client.post(handler_path(fake, SENDER_CODE), data=payload)
    assert response.status_code == 200, response.content
    return payload


def pending() -> list[int]:
    return list(Message.objects.filter(dispatch_pending=True).order_by("pk").values_list("pk", flat=True))


def test_a_handler_post_publishes_nothing_and_leaves_its_row_owed_a_dispatch(
        sms_portal, ms_fake_portal, client, not_eager):
    payload = post_message(client, ms_fake_portal)

    message = Message.objects.get(message_id=payload["message_id"])
    assert message.state == Message.State.ACCEPTED and message.dispatch_pending
    assert queued("sms") == 0


def test_the_dispatcher_publishes_each_pending_row_once_and_clears_it(
        sms_portal, ms_fake_portal, client, not_eager):
    for n in range(3):
        post_message(client, ms_fake_portal, body=f"code {n}")
    assert len(pending()) == 3 and queued() == 0

    assert drain() == 3
    assert pending() == [] and queued() == 3
    assert drain() == 0  # cleared: nothing is published a second time
    assert queued() == 3


def test_a_broker_that_is_down_keeps_the_rows_pending_and_a_later_drain_publishes_them(
        sms_portal, ms_fake_portal, client, not_eager, settings):
    for n in range(2):
        post_message(client, ms_fake_portal, body=f"code {n}")
    owed = pending()

    _use_broker(f"redis://127.0.0.1:{closed_port()}/0")
    assert drain() == 0
    assert pending() == owed  # still owed: nothing was lost

    _use_broker(settings.CELERY_BROKER_URL)  # the broker is back
    assert drain() == 2
    assert pending() == [] and queued() == 2


def test_a_dispatcher_that_dies_after_publishing_publishes_again_and_the_carrier_gets_one_send(
        sms_portal, ms_fake_portal, client, not_eager, fake_smsru):
    payload = post_message(client, ms_fake_portal)

    class DiedBeforeCommit(Exception):
        pass

    # The dispatcher published, then died before its transaction committed: the flag's clearing is rolled
    # back, the task is in the broker.
    with pytest.raises(DiedBeforeCommit), transaction.atomic():
        assert drain() == 1
        raise DiedBeforeCommit
    assert len(pending()) == 1 and queued() == 1

    assert drain() == 1  # the next drain publishes it again
    assert pending() == [] and queued() == 2

    with worker(["sms", "sms_status"]):
        assert wait_for(lambda: queued() == 0)
        assert wait_for(lambda: Message.objects.get(message_id=payload["message_id"]).state
                        == Message.State.HANDED_TO_CARRIER)
    # Both tasks ran: the second found the row claimed (send_message's conditional UPDATE) and sent nothing.
    assert [m.body for m in fake_smsru.messages] == ["your code 1234"]
    assert Message.objects.get(message_id=payload["message_id"]).attempts == 1


def test_an_sms_worker_sends_a_handler_message_woken_by_notify_without_sweeper_or_beat(
        sms_portal, ms_fake_portal, client, not_eager, fake_smsru, settings):
    settings.SMS_DISPATCH_POLL_SECONDS = 3600  # no safety-net drain during the test: only NOTIFY wakes it
    with worker(["sms", "sms_status"]) as controller:
        dispatcher = dispatcher_of(controller)
        assert dispatcher is not None and dispatcher.is_alive
        assert wait_for(lambda: dispatcher.drains >= 1)  # listening, and its catch-up drain is done
        before = dispatcher.drains

        payload = post_message(client, ms_fake_portal)

        assert wait_for(lambda: Message.objects.get(message_id=payload["message_id"]).state
                        == Message.State.HANDED_TO_CARRIER)
        assert dispatcher.drains > before and dispatcher.published == 1
        assert pending() == [] and queued() == 0
    assert not dispatcher.is_alive  # stopped with the worker
    assert [m.body for m in fake_smsru.messages] == ["your code 1234"]


def test_a_worker_consuming_only_lifecycle_and_maintenance_runs_no_dispatcher(
        sms_portal, ms_fake_portal, client, not_eager):
    with worker(["lifecycle", "maintenance"]) as controller:
        assert STEP in controller.blueprint.steps  # registered, and left out by its include_if
        assert dispatcher_of(controller) is None
        assert all(type(step) is not DispatcherStep for step in controller.steps)
        post_message(client, ms_fake_portal)
        time.sleep(1)  # long enough for a NOTIFY to be heard, were anything listening (not a timing assert)
        assert len(pending()) == 1 and queued("sms") == 0


def test_a_repeated_post_dispatches_nothing_new(sms_portal, ms_fake_portal, client, not_eager):
    payload = post_message(client, ms_fake_portal)
    assert drain() == 1

    again = client.post(handler_path(ms_fake_portal, SENDER_CODE), data=payload)

    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert pending() == []  # the repeat marked nothing owed
    assert drain() == 0
    assert queued() == 1 and Message.objects.count() == 1


def test_the_sweeper_dispatches_a_pending_row_whose_dispatcher_died_and_clears_its_flag(
        sms_portal, ms_fake_portal, client, not_eager):
    payload = post_message(client, ms_fake_portal)
    message = Message.objects.get(message_id=payload["message_id"])
    # No dispatcher ran, and the grace period is over.
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - timedelta(hours=1))

    assert redispatch_lost_messages.apply().get() == 1

    assert pending() == [] and queued() == 1
    assert drain() == 0  # a dispatcher coming back has nothing left to publish


def test_a_worker_built_like_the_celery_command_has_the_step_only_when_it_consumes_sms():
    """In a fresh process Django is not set up yet: Celery's Django fix-up runs django.setup() (and so
    MessageserviceConfig.ready, which registers the step) when WorkController.__init__ loads the modules,
    before the blueprint is built from app.steps["worker"]. Nothing is started."""
    script = textwrap.dedent(f"""
        import sys
        import django.apps
        from b24portal.celery import app
        assert not django.apps.apps.ready  # as under `celery -A b24portal worker`
        worker = app.WorkController(queues=sys.argv[1].split(","), pool="solo", hostname="probe@test")
        step = worker.blueprint.steps.get({STEP!r})
        print("included" if step is not None and step.obj is not None else "absent")
    """)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "CELERY_SKIP_CHECKS": "1"}

    def built(queues: str) -> str:
        out = subprocess.run([sys.executable, "-c", script, queues], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-3000:]
        return out.stdout.strip().splitlines()[-1]

    assert built("sms,sms_status") == "included"  # the Procfile's worker-sms
    assert built("sms") == "included"
    assert built("sms_status") == "absent"  # status work only: no sends to publish
    assert built("lifecycle,maintenance") == "absent"

