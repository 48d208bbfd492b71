"""The HANDLER endpoint Bitrix24 POSTs each SMS to: stored once, answered at once, sent once."""

from __future__ import annotations

import threading

import pytest
import requests

from messageservice import accounts, sending
from messageservice.models import Message, MessageCrmLink
from tenants.journal import Actor
from tenants.models import Portal
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24
from tests.messageservice.conftest import SENDER_CODE

pytestmark = pytest.mark.django_db

PHONE = "+79991234567"


def post(client, fake, payload, path=None):
    return client.post(path or handler_path(fake, SENDER_CODE), data=payload)


def test_a_message_is_stored_answered_and_sent_through_the_carrier(
        client, sms_portal, ms_fake_portal, fake_smsru, django_capture_on_commit_callbacks):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Your code: 1234")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(client, ms_fake_portal, payload)

    assert response.status_code == 200
    assert response.json() == {"ok": True, "message_id": payload["message_id"], "state": "accepted",
                               "duplicate": False}
    message = Message.objects.get(portal=sms_portal)
    assert message.state == Message.State.HANDED_TO_CARRIER and message.status == "queued"
    assert message.recipient == PHONE and message.origin == "crm" and message.author_user_id is None
    sent = fake_smsru.messages
    assert [(m.to, m.body) for m in sent] == [("79991234567", "Your code: 1234")]
    assert message.carrier_message_id == sent[0].id and message.carrier_status == "100"
    assert message.bindings == [{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}]
    assert message.meta["module_id"] == "crm" and message.push_due


def test_the_same_post_twice_stores_one_row_and_sends_once(
        client, sms_portal, ms_fake_portal, fake_smsru, django_capture_on_commit_callbacks):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Hello")
    with django_capture_on_commit_callbacks(execute=True):
        first = post(client, ms_fake_portal, payload)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        second = post(client, ms_fake_portal, payload)

    assert first.status_code == second.status_code == 200
    assert second.json()["duplicate"] is True and callbacks == []
    assert Message.objects.count() == 1
    assert len(fake_smsru.messages) == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_posts_of_one_message_store_one_row_and_send_once(
        live_server, sms_portal, ms_fake_portal, fake_smsru):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Race")
    url = live_server.url + handler_path(ms_fake_portal, SENDER_CODE)
    barrier = threading.Barrier(4)
    answers: list[int] = []

    def hit() -> None:
        barrier.wait()
        answers.append(requests.post(url, data=payload, timeout=30).status_code)

    threads = [threading.Thread(target=hit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert answers == [200, 200, 200, 200]
    assert Message.objects.filter(message_id=payload["message_id"]).count() == 1
    assert len(fake_smsru.messages) == 1
    assert Message.objects.get().state == Message.State.HANDED_TO_CARRIER


def test_a_message_without_an_author_has_no_auth_block_and_is_accepted(
        client, sms_portal, ms_fake_portal, django_capture_on_commit_callbacks):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Automated", with_auth=False)
    assert not any(key.startswith("auth[") for key in payload)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, ms_fake_portal, payload).status_code == 200
    assert Message.objects.get().author_user_id is None


def test_a_workflow_message_is_accepted_and_bound_to_its_crm_document(
        client, sms_portal, ms_fake_portal, django_capture_on_commit_callbacks):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "From a workflow", bizproc=True)
    with django_capture_on_commit_callbacks(execute=True):
        assert post(client, ms_fake_portal, payload).status_code == 200
    message = Message.objects.get()
    assert message.origin == "bizproc"
    assert message.meta["workflow_id"] == payload["workflow_id"]
    assert message.meta["document_id"] == ["crm", "CCrmDocumentLead", "LEAD_98"]
    assert list(sending.messages_for_crm_item(sms_portal, 1, 98)) == [message]  # lead 98


@pytest.mark.parametrize("field", ["auth[member_id]", "auth[application_token]"])
def test_an_auth_block_that_does_not_match_the_portal_is_refused(client, sms_portal, ms_fake_portal, field):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Forged")
    payload[field] = "0123456789abcdef0123456789abcdef"
    response = post(client, ms_fake_portal, payload)
    assert response.status_code == 403 and "auth" in response.json()["error"]
    assert not Message.objects.exists()


def test_another_installed_portals_genuine_auth_block_is_refused(client, sms_portal, ms_fake_portal, outsider):
    """The outsider's Bitrix24 POSTs its own, valid auth block to the owner's HANDLER: refused, nothing stored."""
    payload = send_from_bitrix24(outsider.fake_portal, SENDER_CODE, PHONE, "Not yours", check_registered=False)
    assert payload["auth[member_id]"] == outsider.portal.member_id

    response = post(client, ms_fake_portal, payload)

    assert response.status_code == 403 and "auth" in response.json()["error"]
    assert not Message.objects.exists()
    # The owner's own Bitrix24 still gets through the same HANDLER.
    assert post(client, ms_fake_portal, send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Mine")).status_code \
        == 200
    assert list(Message.objects.values_list("portal_id", flat=True)) == [sms_portal.pk]


def test_a_portal_without_a_stored_application_token_still_receives_authored_messages(
    client, sms_portal, ms_fake_portal
):
    # Installed from an older install frame (no APPLICATION_TOKEN) and no ONAPPINSTALL yet: the URL key is
    # the proof; a forged member_id is still refused.
    Portal.objects.filter(pk=sms_portal.pk).update(application_token_hash="")
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Hello")
    assert post(client, ms_fake_portal, payload).status_code == 200
    forged = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "Forged")
    forged["auth[member_id]"] = "0123456789abcdef0123456789abcdef"
    assert post(client, ms_fake_portal, forged).status_code == 403
    assert Message.objects.count() == 1


def test_an_unknown_handler_key_is_404(client, sms_portal, ms_fake_portal):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "x")
    response = post(client, ms_fake_portal, payload, path="/b24/messageservice/" + "A" * 43 + "/")
    assert response.status_code == 404 and response.json()["error"] == "unknown handler"
    assert not Message.objects.exists()


def test_an_unknown_or_inactive_sender_code_is_404(client, sms_portal, sms_account, ms_fake_portal):
    payload = send_from_bitrix24(ms_fake_portal, "nosuchcode", PHONE, "x", check_registered=False)
    assert post(client, ms_fake_portal, payload).status_code == 404
    accounts.do_deactivate_account(sms_portal, sms_account, actor=Actor("staff", "tester"))
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "x")
    response = post(client, ms_fake_portal, payload)
    assert response.status_code == 404 and "sender" in response.json()["error"]
    assert not Message.objects.exists()


@pytest.mark.parametrize("status", [Portal.Status.BLOCKED, Portal.Status.DELETED, Portal.Status.NEEDS_REINSTALL])
def test_a_portal_that_is_not_active_is_refused_with_its_reason(client, sms_portal, ms_fake_portal, status):
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "x")
    Portal.objects.filter(pk=sms_portal.pk).update(status=status)
    response = post(client, ms_fake_portal, payload)
    assert response.status_code == 409 and status in response.json()["error"]
    assert not Message.objects.exists()


def test_messages_can_be_found_by_crm_item_and_by_author(client, sms_portal, ms_fake_portal,
                                                          django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post(client, ms_fake_portal, send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "a",
                                                        bindings=[(2, 7), (3, 9)]))
        post(client, ms_fake_portal, send_from_bitrix24(ms_fake_portal, SENDER_CODE, PHONE, "b", bindings=[(2, 8)]))
    assert [m.body for m in sending.messages_for_crm_item(sms_portal, 2, 7)] == ["a"]
    assert [m.body for m in sending.messages_for_crm_item(sms_portal, 3, 9)] == ["a"]
    assert MessageCrmLink.objects.count() == 3
    widget, _created = sending.do_send_from_widget(sms_portal, account=sms_portal.sms_accounts.get(), to=PHONE,
                                                    body="c", bindings=[{"OWNER_TYPE_ID": 2, "OWNER_ID": 7}],
                                                    user_id=5, client_key="key-of-one-submission")
    assert len(widget.message_id) == 32 and widget.origin == "widget" and not widget.known_to_bitrix24
    assert [m.body for m in sending.messages_for_crm_item(sms_portal, 2, 7)] == ["c", "a"]
    assert list(sending.messages_by_author(sms_portal, 5)) == [widget]
