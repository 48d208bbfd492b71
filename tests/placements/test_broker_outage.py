"""Finding 4 of issue 10: the Celery broker is down while work is committed.

Against a REAL broker: each test starts its own `redis-server` on a spare port, points Celery at it (not
eager), stops it, makes the requests (they must succeed: the work is saved), starts it again, runs the
sweepers and lets a real worker consume what they dispatched. Nothing waits on the wall clock: rows are
moved past their grace period explicitly, and waits are polls with a deadline.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
import redis
from celery.contrib.testing.worker import start_worker
from django.utils import timezone

from b24portal.celery import app
from installs.tasks import cleanup_stale_installs, redispatch_stuck_install_runs
from messageservice.models import Message
from messageservice.tasks import redispatch_lost_messages
from placements.models import TimelineComment
from placements.tasks import redispatch_timeline_comments
from tenants.models import InstallRun, Portal
from tests.conftest import post_install_frame
from tests.fakes import b24_placements
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24
from tests.waiting import wait_for

from .conftest import LIST_MENU_URL, api, frame_token, post_frame

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary"),
]

LONG_AGO = timedelta(hours=1)



def spare_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Broker:
    """A redis-server of our own, which the test stops and starts (same port, empty each time)."""

    def __init__(self) -> None:
        self.port = spare_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        assert wait_for(lambda: _pings(client), timeout=10), "redis-server did not start"

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
        assert not _pings(redis.Redis(port=self.port, socket_connect_timeout=0.5))

    def queued(self) -> int:
        return int(redis.Redis(port=self.port).llen("celery"))


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def _use_broker(url: str) -> None:
    app.conf.broker_url = url
    app._pool = None  # connections to the previous broker are not reused
    app.amqp._producer_pool = None


@pytest.fixture
def broker(settings: Any) -> Iterator[Broker]:
    own = Broker()
    own.start()
    previous = app.conf.broker_url
    settings.CELERY_BROKER_URL = own.url
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    _use_broker(own.url)
    try:
        yield own
    finally:
        own.stop()
        app.conf.task_always_eager = True
        _use_broker(previous)


@contextmanager
def real_worker() -> Iterator[None]:
    # Every queue (sms, sms_status, lifecycle, maintenance): this worker stands in for all of the Procfile's workers.
    with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING",
                      shutdown_timeout=10, queues=["sms", "sms_status", "lifecycle", "maintenance"]):
        yield


def open_slider(client: Any, fake_portal: Any, item_id: int) -> Any:
    return post_frame(client, LIST_MENU_URL, fake_portal, "CRM_CONTACT_LIST_MENU",
                      {"ID": str(item_id), "URI": "/crm/contact/list/"}, user_id=5, is_admin=False)


def test_the_sms_handler_answers_200_while_the_broker_is_down_and_the_sweeper_sends_it_once(
        client, installed_portal, fake_portal, sms_account, fake_smsru, broker):
    broker.stop()
    payload = send_from_bitrix24(fake_portal, sms_account.code, "+79991234567", "your code 1234")
    response = client.post(handler_path(fake_portal, sms_account.code), data=payload)

    assert response.status_code == 200, response.content
    message = Message.objects.get(message_id=payload["message_id"])
    assert message.state == Message.State.ACCEPTED  # stored; its send task was never published

    broker.start()
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - LONG_AGO)  # past the grace
    assert redispatch_lost_messages.apply().get() == 1
    assert redispatch_lost_messages.apply().get() == 0  # claimed: a second sweep dispatches nothing
    with real_worker():
        assert wait_for(lambda: Message.objects.get(pk=message.pk).state == Message.State.HANDED_TO_CARRIER)
        assert wait_for(lambda: broker.queued() == 0)
    assert [m.body for m in fake_smsru.messages] == ["your code 1234"]


def test_the_widget_send_succeeds_while_the_broker_is_down_and_a_second_click_sends_no_second_sms(
        client, installed_portal, fake_portal, sms_account, fake_smsru, broker):
    fake_portal.add_user(5, is_admin=False)
    contact = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Ivan"}, phones=["+79991234567"])
    token = frame_token(open_slider(client, fake_portal, contact))
    url = f"/b24/placements/api/items/CONTACT/{contact}/messages/"
    send = {"account": sms_account.pk, "to": "+79991234567", "body": "Your order is ready"}

    broker.stop()
    first = api(client, "POST", url, token, {**send, "client_key": "click-0123456789"})
    second = api(client, "POST", url, token, {**send, "client_key": "click-0123456789"})  # the user clicks again

    assert first.status_code == 201, first.content
    assert second.status_code == 200, second.content
    assert second.json()["id"] == first.json()["id"]
    message = Message.objects.get()
    assert message.client_key == "click-0123456789"
    comment = TimelineComment.objects.get()  # the comment is owed, kept in the outbox
    assert comment.message_id == message.pk and comment.state == TimelineComment.State.PENDING

    broker.start()
    Message.objects.filter(pk=message.pk).update(next_attempt_at=timezone.now() - LONG_AGO)
    TimelineComment.objects.filter(pk=comment.pk).update(next_attempt_at=timezone.now() - LONG_AGO)
    assert redispatch_lost_messages.apply().get() == 1
    assert redispatch_timeline_comments.apply().get() == 1
    with real_worker():
        assert wait_for(lambda: Message.objects.get(pk=message.pk).state == Message.State.HANDED_TO_CARRIER)
        assert wait_for(lambda: TimelineComment.objects.get(pk=comment.pk).state == TimelineComment.State.DONE)
        assert wait_for(lambda: broker.queued() == 0)
    assert redispatch_lost_messages.apply().get() == 0 and redispatch_timeline_comments.apply().get() == 0

    assert [m.body for m in fake_smsru.messages] == ["Your order is ready"]  # one SMS for two clicks
    (entry,) = b24_placements.timeline(fake_portal)  # and one timeline comment
    assert entry["ENTITY_ID"] == contact and entry["AUTHOR_ID"] == 5
    third = api(client, "POST", url, token, {**send, "client_key": "click-0123456789"})
    assert third.status_code == 200 and third.json()["id"] == message.pk and len(fake_smsru.messages) == 1


def test_an_install_run_committed_while_the_broker_is_down_is_dispatched_again_not_cleaned_up(
        client, fake_portal, broker, settings):
    broker.stop()
    response = post_install_frame(client, fake_portal)

    assert response.status_code == 200, response.content
    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    assert run.status == InstallRun.Status.PENDING

    # Long past the install timeout, the run was never dispatched: not an abandoned install. The clean-up
    # keeps the portal and (broker still down) leaves the run pending for the sweeper.
    InstallRun.objects.filter(pk=run.pk).update(progress_at=timezone.now() - LONG_AGO)
    Portal.objects.filter(pk=run.portal_id).update(
        install_started_at=timezone.now() - timedelta(minutes=settings.B24_INSTALL_TIMEOUT_MINUTES + 1))
    assert cleanup_stale_installs.apply().get() == 0
    assert Portal.objects.get(pk=run.portal_id).status == Portal.Status.NEW

    broker.start()
    InstallRun.objects.filter(pk=run.pk).update(progress_at=timezone.now() - LONG_AGO)
    assert redispatch_stuck_install_runs.apply().get() == 1
    assert redispatch_stuck_install_runs.apply().get() == 0  # claimed
    with real_worker():
        assert wait_for(lambda: InstallRun.objects.get(pk=run.pk).status == InstallRun.Status.SUCCEEDED)
    assert Portal.objects.get(pk=run.portal_id).status == Portal.Status.ACTIVE
