"""Replies: every finished job queues one per destination; HTTP callbacks are signed and carry a delivery id,
and a callback endpoint that is down gets each reply later, once."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from records import replies
from records.intake import do_accept_job
from records.models import ApiKey, Record, Reply, SyncJob
from tests.records.callback_server import CallbackServer
from tests.records.conftest import IVAN

pytestmark = pytest.mark.django_db


@pytest.fixture
def callback() -> Iterator[CallbackServer]:
    server = CallbackServer()
    yield server
    server.close()


@pytest.fixture
def hooked_key(api_key: tuple[ApiKey, str], callback: CallbackServer) -> ApiKey:
    key = api_key[0]
    key.callback_url = callback.url
    key.save()
    return key


def test_a_finished_job_posts_a_signed_callback_in_the_reply_format(
        api: APIClient, hooked_key: ApiKey, callback: CallbackServer, django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post("/api/v1/records/", IVAN, format="json")
    assert response.status_code == 202
    (received,) = callback.delivered()
    job = SyncJob.objects.get()
    reply = Reply.objects.get()
    assert received.body == {"status": "success", "action": "create_card", "user": IVAN,
                             "bitrix_lead_id": job.lead_id, "job_id": job.pk, "delivery_id": str(reply.delivery_id)}
    expected = "sha256=" + hmac.new(hooked_key.callback_secret.encode(), received.raw, hashlib.sha256).hexdigest()
    assert received.headers["X-B24Portal-Signature"] == expected
    assert received.headers["X-B24Portal-Delivery"] == str(reply.delivery_id)
    assert reply.state == Reply.State.DELIVERED and reply.kind == "http" and reply.attempts == 1


def test_a_failed_job_replies_with_the_error_and_its_reason(
        api: APIClient, hooked_key: ApiKey, callback: CallbackServer, django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/records/", {**IVAN, "stage": "NOPE"}, format="json")
    (received,) = callback.delivered()
    assert received.body["status"] == "error" and "Status not found" in received.body["reason"]
    assert received.body["user"] == {**IVAN, "stage": "NOPE"} and received.body["action"] == "create_card"


def test_a_callback_endpoint_that_is_down_gets_the_reply_later_once(
        api: APIClient, hooked_key: ApiKey, callback: CallbackServer, django_capture_on_commit_callbacks: Any):
    callback.answers = [503, 503]
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/records/", IVAN, format="json")
    reply = Reply.objects.get()
    assert reply.state == Reply.State.PENDING and "HTTP 503" in reply.last_error
    for _ in range(3):  # time passes; the sweeper runs every minute
        Reply.objects.filter(state=Reply.State.PENDING).update(next_attempt_at=timezone.now() - timedelta(hours=1))
        with django_capture_on_commit_callbacks(execute=True):
            replies.redispatch_replies.apply()
    reply.refresh_from_db()
    assert reply.state == Reply.State.DELIVERED and reply.attempts == 3
    assert [r.status for r in callback.received] == [503, 503, 200]
    assert len(callback.delivered()) == 1
    assert {r.headers["X-B24Portal-Delivery"] for r in callback.received} == {str(reply.delivery_id)}


def test_an_unreachable_callback_is_retried_and_a_refusing_one_fails(
        api: APIClient, hooked_key: ApiKey, callback: CallbackServer, django_capture_on_commit_callbacks: Any):
    hooked_key.callback_url = "http://127.0.0.1:9/nowhere"
    hooked_key.save()
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/records/", IVAN, format="json")
    assert Reply.objects.get().state == Reply.State.PENDING
    hooked_key.callback_url = callback.url
    hooked_key.save()
    callback.answers = [410]
    with django_capture_on_commit_callbacks(execute=True):
        api.post("/api/v1/records/", {**IVAN, "external_id": "2"}, format="json")
    assert Reply.objects.get(record__external_id="2").state == Reply.State.FAILED


def test_a_stuck_delivery_is_taken_up_again_by_the_sweeper(api_key: tuple[ApiKey, str], callback: CallbackServer,
                                                            installed_portal: Any,
                                                            django_capture_on_commit_callbacks: Any):
    key = api_key[0]
    key.callback_url = callback.url
    key.save()
    record = Record.objects.create(portal=installed_portal, external_id="1", api_key=key)
    with django_capture_on_commit_callbacks(execute=False):
        (reply,) = replies.do_queue_replies(None, record, {"status": "success", "action": "card_changed"})
    Reply.objects.filter(pk=reply.pk).update(state=Reply.State.SENDING,
                                             claimed_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        replies.redispatch_replies.apply()  # the claim is released
    Reply.objects.filter(pk=reply.pk).update(next_attempt_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        replies.redispatch_replies.apply()
    reply.refresh_from_db()
    assert reply.state == Reply.State.DELIVERED
    assert callback.delivered()[0].body["action"] == "card_changed"


def test_replies_go_to_every_destination_of_the_job_and_none_without_one(installed_portal: Any,
                                                                        api_key: tuple[ApiKey, str],
                                                                        django_capture_on_commit_callbacks: Any):
    key = api_key[0]
    key.callback_url = "https://hooks.example.com/b24"
    key.save()
    with django_capture_on_commit_callbacks(execute=False):
        job, _ = do_accept_job(installed_portal, action="create", external_id="1", fields=IVAN_FIELDS,
                               source="amqp", reply_queue="bitrix.responses", api_key=key)
        both = replies.do_queue_replies(job, job.record, {"status": "success"})
        plain, _ = do_accept_job(installed_portal, action="create", external_id="2", fields=IVAN_FIELDS)
        none = replies.do_queue_replies(plain, plain.record, {"status": "success"})
    assert sorted((r.kind, r.target) for r in both) == [("amqp", "bitrix.responses"),
                                                      ("http", "https://hooks.example.com/b24")]
    assert len({r.delivery_id for r in both}) == 2
    assert all(r.body["job_id"] == job.pk and r.body["delivery_id"] == str(r.delivery_id) for r in both)
    assert none == []


def test_a_kind_without_a_deliverer_waits_and_the_registered_one_delivers(installed_portal: Any,
                                                                          django_capture_on_commit_callbacks: Any,
                                                                          monkeypatch: Any):
    monkeypatch.setattr(replies, "DELIVERERS", dict(replies.DELIVERERS))
    replies.DELIVERERS.pop("amqp", None)
    record = Record.objects.create(portal=installed_portal, external_id="1", reply_queue="bitrix.responses")
    with django_capture_on_commit_callbacks(execute=True):
        (reply,) = replies.do_queue_replies(None, record, {"status": "success"})
    reply.refresh_from_db()
    assert reply.state == Reply.State.PENDING and "no deliverer" in reply.last_error
    sent: list[Any] = []
    replies.register_deliverer("amqp", lambda r: sent.append((r.target, r.body)))
    Reply.objects.filter(pk=reply.pk).update(next_attempt_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        replies.redispatch_replies.apply()
    reply.refresh_from_db()
    assert reply.state == Reply.State.DELIVERED
    assert sent == [("bitrix.responses", reply.body)]


IVAN_FIELDS = {k: v for k, v in IVAN.items() if k != "external_id"}
