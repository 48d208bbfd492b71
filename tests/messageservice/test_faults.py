"""Faults with real processes: a worker killed in the middle of a send."""

from __future__ import annotations

import multiprocessing
import os
import signal
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from messageservice.models import Message
from messageservice.tasks import send_message, sweep_stale_claims
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24
from tests.waiting import wait_for

from .conftest import SENDER_CODE
from .killed_worker_proc import run_send

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]



def test_a_worker_killed_mid_send_leaves_a_message_for_review_not_a_second_sms(
    client, sms_portal, fake_portal, fake_smsru, settings
):
    payload = send_from_bitrix24(fake_portal, SENDER_CODE, "+79991234567", "your code 1234")
    assert client.post(handler_path(fake_portal, SENDER_CODE), data=payload).status_code == 200
    message = Message.objects.get(message_id=payload["message_id"])
    # The handler dispatched the send on commit (eager): it went through. Put the message back as freshly
    # accepted and make the carrier slow, so a new worker is caught mid-request.
    Message.objects.filter(pk=message.pk).update(state="accepted", carrier_message_id="", status=None)
    sends_before = len(fake_smsru.messages)
    fake_smsru.response_delay = 30

    context = multiprocessing.get_context("spawn")
    env = {"PROJECT_ROOT": str(settings.BASE_DIR), "KILL_DATABASE_NAME": connection.settings_dict["NAME"],
           "TEST_DATABASE_URL": os.environ["DATABASE_URL"]}
    worker = context.Process(target=run_send, args=(message.pk, env))
    worker.start()
    try:
        # The carrier has the request (it may send the SMS) but has not answered yet.
        assert wait_for(lambda: len(fake_smsru.messages) == sends_before + 1)
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(timeout=10)
    finally:
        fake_smsru.response_delay = 0
        if worker.is_alive():
            worker.kill()

    message.refresh_from_db()
    assert message.state == Message.State.SENDING  # claimed, outcome unknown

    # Celery redelivers the task of a lost worker (acks_late): the claim stops a second send.
    assert send_message.apply(args=[message.pk]).get() == "not claimable"
    assert len(fake_smsru.messages) == sends_before + 1

    # After the claim timeout the sweeper hands it to staff instead of resending it.
    Message.objects.filter(pk=message.pk).update(claimed_at=timezone.now() - timedelta(hours=1))
    sweep_stale_claims.apply()
    message.refresh_from_db()
    assert message.state == Message.State.NEEDS_REVIEW
    assert "check with the carrier" in message.last_error
    assert len(fake_smsru.messages) == sends_before + 1
    assert sms_portal.journal.filter(message__icontains="review").exists()
