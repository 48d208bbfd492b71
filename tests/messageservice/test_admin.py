"""SMS admin: lists without N+1 queries or a full COUNT(*), exact searches, actions that do real work,
and carrier credentials never shown (nor logged)."""

from __future__ import annotations

import logging
import secrets

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from messageservice.admin import EstimatedCountPaginator
from messageservice.models import Message
from tenants.journal import Actor
from tests.fakes.b24_messageservice import senders

pytestmark = pytest.mark.django_db

MESSAGES_URL = "/admin/messageservice/message/"
ACCOUNTS_URL = "/admin/messageservice/provideraccount/"


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


def make_messages(account, n: int, **fields) -> list[Message]:
    return Message.objects.bulk_create(
        Message(portal=account.portal, account=account, carrier=account.carrier, message_id=secrets.token_hex(16),
                origin="crm", recipient_raw="+79991234567", recipient="+79991234567", body="x", **fields)
        for _ in range(n))


def queries(staff_client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(url)
        assert response.status_code == 200
    return len(ctx.captured_queries)


def test_the_message_list_makes_the_same_number_of_queries_for_5_or_50_messages(staff_client, sms_account):
    make_messages(sms_account, 5, state="failed", last_error="boom")
    few, few_filtered = queries(staff_client, MESSAGES_URL), queries(staff_client, MESSAGES_URL + "?state=failed")
    make_messages(sms_account, 45, state="failed", last_error="boom")
    assert queries(staff_client, MESSAGES_URL) == few
    assert queries(staff_client, MESSAGES_URL + "?state=failed") == few_filtered


def test_the_message_list_never_counts_the_whole_table(staff_client, sms_account):
    make_messages(sms_account, 3)
    with CaptureQueriesContext(connection) as ctx:
        page = staff_client.get(MESSAGES_URL).content.decode()
    sql = [q["sql"] for q in ctx.captured_queries]
    assert not any(s.startswith('SELECT COUNT(*)') and "messageservice_message" in s and "LIMIT" not in s
                   for s in sql), sql
    assert "+7999***4567" in page and "+79991234567" not in page  # recipients masked


def test_the_estimated_paginator_uses_the_planner_estimate_for_unfiltered_lists(sms_account, settings):
    settings.SMS_ADMIN_COUNT_CAP = 2
    make_messages(sms_account, 5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE messageservice_message")
    assert EstimatedCountPaginator(Message.objects.all(), 50).count == 5
    assert EstimatedCountPaginator(Message.objects.filter(state="accepted"), 50).count == 2  # capped


def test_the_message_list_filters_by_portal_state_status_carrier_and_date(staff_client, sms_account):
    make_messages(sms_account, 2)
    url = (f"{MESSAGES_URL}?portal={sms_account.portal_id}&state=accepted&carrier=smsru&status__isnull=True"
           "&created_at__gte=2000-01-01+00:00:00%2B00:00")
    assert staff_client.get(url).status_code == 200
    assert staff_client.get(f"{MESSAGES_URL}?carrier=twilio").context["cl"].result_count == 0


def test_messages_can_be_found_by_message_id_carrier_id_and_phone(staff_client, sms_account):
    wanted, _other = make_messages(sms_account, 2)
    Message.objects.filter(pk=wanted.pk).update(carrier_message_id="000001-10000001", recipient="+79990001122")
    for term in (wanted.message_id, "000001-10000001", "+7 999 000-11-22"):
        results = list(staff_client.get(MESSAGES_URL, {"q": term}).context["cl"].result_list)
        assert results == [Message.objects.get(pk=wanted.pk)], term


def test_retry_and_cancel_actions_change_only_messages_in_the_right_state(
        staff_client, sms_account, fake_smsru, django_capture_on_commit_callbacks):
    failed, sent = make_messages(sms_account, 1, state="failed") + make_messages(sms_account, 1, state="sent_to_carrier")
    waiting = make_messages(sms_account, 1, state="accepted")[0]
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(MESSAGES_URL, {"action": "retry_send", "_selected_action": [failed.pk, sent.pk]},
                                     follow=True)
    assert "1 message(s) queued to send again; 1 skipped" in response.content.decode()
    failed.refresh_from_db()
    assert failed.state == "sent_to_carrier" and len(fake_smsru.messages) == 1

    staff_client.post(MESSAGES_URL, {"action": "cancel", "_selected_action": [waiting.pk, sent.pk]})
    waiting.refresh_from_db()
    assert waiting.state == "cancelled" and waiting.status == "failed" and waiting.push_due
    assert Message.objects.get(pk=sent.pk).state == "sent_to_carrier"


def test_needs_review_messages_can_be_marked_sent_or_failed(staff_client, sms_account):
    first, second = make_messages(sms_account, 2, state="needs_review")
    staff_client.post(MESSAGES_URL, {"action": "mark_sent", "_selected_action": [first.pk]})
    staff_client.post(MESSAGES_URL, {"action": "mark_failed", "_selected_action": [second.pk]})
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.state, first.status) == ("sent_to_carrier", "sent")
    assert (second.state, second.status) == ("failed", "failed")


def test_the_account_list_makes_the_same_number_of_queries_and_hides_credentials(
        staff_client, sms_account, fake_smsru, django_capture_on_commit_callbacks):
    from tests.messageservice.conftest import create_account

    few = queries(staff_client, ACCOUNTS_URL)
    for index in range(5):
        create_account(sms_account.portal, django_capture_on_commit_callbacks, code=f"more{index}",
                       credentials=fake_smsru.credentials, base_url=fake_smsru.base_url)
    assert queries(staff_client, ACCOUNTS_URL) == few
    change_page = staff_client.get(f"{ACCOUNTS_URL}{sms_account.pk}/change/").content.decode()
    list_page = staff_client.get(ACCOUNTS_URL).content.decode()
    assert fake_smsru.api_id not in change_page and fake_smsru.api_id not in list_page
    assert "api_id: ••••••••" in change_page


def test_send_test_sms_action_asks_for_a_number_then_sends(
        staff_client, sms_account, fake_smsru, django_capture_on_commit_callbacks):
    form = staff_client.post(ACCOUNTS_URL, {"action": "send_test_sms", "_selected_action": [sms_account.pk]})
    assert form.status_code == 200 and 'name="to"' in form.content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        done = staff_client.post(ACCOUNTS_URL, {"action": "send_test_sms", "_selected_action": [sms_account.pk],
                                                "apply": "1", "to": "+79991234567"}, follow=True)
    notes = [str(m) for m in done.context["messages"]]
    assert len(notes) == 1 and notes[0].startswith(f"{sms_account.code}: test SMS ")
    assert [m.to for m in fake_smsru.messages] == ["79991234567"]


def test_deactivate_and_reregister_actions_drive_the_bitrix24_sender(
        staff_client, sms_account, ms_fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(ACCOUNTS_URL, {"action": "deactivate", "_selected_action": [sms_account.pk]})
    assert senders(ms_fake_portal) == {}
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post(f"{ACCOUNTS_URL}{sms_account.pk}/change/", {
            "carrier": "smsru", "code": sms_account.code, "name": "Back", "sender": "", "base_url":
            sms_account.base_url, "options": "{}", "is_active": "on", "new_credentials": ""})
    assert senders(ms_fake_portal)[sms_account.code]["NAME"] == "Back"
    sms_account.refresh_from_db()
    assert sms_account.credentials  # kept although the form left them blank
    ms_fake_portal.ext["messageservice"]["senders"].clear()
    staff_client.post(ACCOUNTS_URL, {"action": "reregister_sender", "_selected_action": [sms_account.pk]})
    assert list(senders(ms_fake_portal)) == [sms_account.code]


def test_credentials_never_reach_the_logs_or_the_journal(sms_account, fake_smsru, caplog,
                                                         django_capture_on_commit_callbacks):
    from messageservice import accounts

    caplog.set_level(logging.DEBUG)
    fake_smsru.fail_next(1, "bad_api_id")
    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_save_account(sms_account.portal, data={"credentials": {"api_id": "new-secret-api-id-123"}},
                                 account=sms_account, actor=Actor("staff", "tester"))
        accounts.do_send_test_sms(sms_account.portal, sms_account, to="+79991234567", actor=Actor("staff", "tester"))
    assert "new-secret-api-id-123" not in caplog.text and fake_smsru.api_id not in caplog.text
    journal = " ".join(str(e.details) + e.message for e in sms_account.portal.journal.all())
    assert "new-secret-api-id-123" not in journal


def test_the_provider_account_page_never_shows_the_handler_key(staff_client, sms_account):
    """Issue 10 finding 6: the handler key is the only proof for messages without an author."""
    key = sms_account.portal.handler_key
    assert key in sms_account.registered_handler  # the stored registration does carry it

    page = staff_client.get(f"/admin/messageservice/provideraccount/{sms_account.pk}/change/")

    assert page.status_code == 200
    assert key not in page.content.decode()
    assert "/b24/messageservice/" in page.content.decode()
