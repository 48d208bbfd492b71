"""Errors and answers of our normal work that say a sender vanished make the senders check due at once, so
the next beat tick reconciles that portal instead of the daily sweep (issue 11); unrelated errors, status
pushes and forged handler POSTs make nothing due."""

from __future__ import annotations

import pytest
from django.utils import timezone

from messageservice import accounts, delivery
from messageservice.models import Message, ProviderAccount
from messageservice.senders import SENDERS_CHECK, sync_account_sender
from messageservice.tasks import reconcile_all_senders
from oauth.client import PortalClient
from oauth.errors import B24Error
from tenants.journal import Actor
from tests import checks
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24, senders, state
from tests.messageservice.conftest import SENDER_CODE, create_account

pytestmark = pytest.mark.django_db

STAFF = Actor("staff", "tester")
SECOND = "second.sender"








@pytest.fixture
def two_senders(sms_account, fake_smsru, django_capture_on_commit_callbacks):
    """Two registered accounts; then an app update drops both senders in Bitrix24 (CORE deletes them)."""
    second = create_account(sms_account.portal, django_capture_on_commit_callbacks, code=SECOND,
                            credentials=fake_smsru.credentials, base_url=fake_smsru.base_url)
    assert second.registration_state == ProviderAccount.Registration.REGISTERED
    checks.push_away(sms_account.portal, SENDERS_CHECK)
    return sms_account, second


def test_a_sender_delete_answered_sender_not_found_makes_the_check_due_and_the_next_tick_re_registers_the_rest(
        two_senders, ms_fake_portal, django_capture_on_commit_callbacks):
    first, _second = two_senders
    portal = first.portal
    state(ms_fake_portal)["senders"].clear()  # gone on Bitrix24's side; we have not heard

    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_deactivate_account(portal, first, actor=STAFF)  # sender.delete → ERROR_SENDER_NOT_FOUND

    assert ms_fake_portal.count("messageservice.sender.delete", error="ERROR_SENDER_NOT_FOUND") == 1
    assert checks.is_due(portal, SENDERS_CHECK)
    assert checks.trigger_entries(portal, SENDERS_CHECK) == [
        "senders check due now: messageservice.sender.delete answered ERROR_SENDER_NOT_FOUND"]

    assert reconcile_all_senders.delay().get() == 1  # the next beat tick

    assert list(senders(ms_fake_portal)) == [SECOND]
    assert not checks.is_due(portal, SENDERS_CHECK)


def test_a_sender_update_answered_sender_not_found_makes_the_check_due_and_the_next_tick_re_registers_it(
        sms_account, ms_fake_portal, django_capture_on_commit_callbacks):
    portal = sms_account.portal
    checks.push_away(portal, SENDERS_CHECK)
    # add says the sender is there, then it is gone before the update (Bitrix24 dropped it in between)
    ms_fake_portal.fail_next("messageservice.sender.add", "ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!")
    state(ms_fake_portal)["senders"].clear()

    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_save_account(portal, account=sms_account, actor=STAFF, data={
            "carrier": "smsru", "code": SENDER_CODE, "name": "Renamed", "credentials": {},
            "base_url": sms_account.base_url})

    assert ms_fake_portal.count("messageservice.sender.update", error="ERROR_SENDER_NOT_FOUND") == 1
    assert checks.is_due(portal, SENDERS_CHECK)

    reconcile_all_senders.delay().get()

    assert senders(ms_fake_portal)[SENDER_CODE]["NAME"] == "Renamed"
    assert ProviderAccount.objects.get(pk=sms_account.pk).registration_state == ProviderAccount.Registration.REGISTERED


def test_a_sync_whose_add_finds_a_registered_sender_gone_makes_the_check_due_and_the_tick_re_registers_the_rest(
        two_senders, ms_fake_portal, django_capture_on_commit_callbacks):
    first, _second = two_senders
    portal = first.portal
    ms_fake_portal.onappupdate()  # drops both senders; suppose the ONAPPUPDATE event never reached us

    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_save_account(portal, account=first, actor=STAFF, data={
            "carrier": "smsru", "code": SENDER_CODE, "name": "Renamed", "credentials": {},
            "base_url": first.base_url})

    assert list(senders(ms_fake_portal)) == [SENDER_CODE]  # the sync re-added only its own
    assert checks.is_due(portal, SENDERS_CHECK)
    assert checks.trigger_entries(portal, SENDERS_CHECK) == [f"senders check due now: sender {SENDER_CODE} was missing from the portal"]

    reconcile_all_senders.delay().get()

    assert set(senders(ms_fake_portal)) == {SENDER_CODE, SECOND}


def test_a_sync_of_a_new_sender_makes_nothing_due(sms_account, fake_smsru, ms_fake_portal,
                                                  django_capture_on_commit_callbacks):
    checks.push_away(sms_account.portal, SENDERS_CHECK)
    create_account(sms_account.portal, django_capture_on_commit_callbacks, code=SECOND,
                   credentials=fake_smsru.credentials, base_url=fake_smsru.base_url)
    assert SECOND in senders(ms_fake_portal)
    assert not checks.is_due(sms_account.portal, SENDERS_CHECK) and checks.trigger_entries(sms_account.portal, SENDERS_CHECK) == []


@pytest.mark.parametrize(("code", "description", "http_status"), [
    ("QUERY_LIMIT_EXCEEDED", "Too many requests", 503),
    ("ACCESS_DENIED", "Access denied!", 403),
])
def test_an_unrelated_error_of_a_sender_sync_makes_nothing_due(sms_account, ms_fake_portal,
                                                              code, description, http_status):
    portal = sms_account.portal
    checks.push_away(portal, SENDERS_CHECK)
    ProviderAccount.objects.filter(pk=sms_account.pk).update(is_active=False)
    sms_account.refresh_from_db()
    ms_fake_portal.fail_next("messageservice.sender.delete", code, description, http_status, times=100)

    with pytest.raises(B24Error):  # what sync_sender runs (its retries are the task's business)
        sync_account_sender(sms_account, PortalClient(portal, max_wait=0))

    assert ms_fake_portal.count("messageservice.sender.delete", error=code) >= 1
    assert not checks.is_due(portal, SENDERS_CHECK) and checks.trigger_entries(portal, SENDERS_CHECK) == []


@pytest.mark.parametrize(("code", "description"), [
    ("ERROR_MESSAGE_NOT_FOUND", "Message not found!"),
    ("ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!"),
    ("ACCESS_DENIED", "Access denied!"),
    ("QUERY_LIMIT_EXCEEDED", "Too many requests"),
])
def test_a_status_push_error_makes_nothing_due(client, sms_portal, ms_fake_portal, django_capture_on_commit_callbacks,
                                               code, description):
    """status.update checks only the CODE's format and finds the message by its id alone (CORE), so none of
    its answers says our sender vanished (see messageservice.senders.VANISHED)."""
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, "+79991234567", "Hi")
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(handler_path(ms_fake_portal, SENDER_CODE), data=payload).status_code == 200
    Message.objects.filter(message_id=payload["message_id"]).update(status="delivered", push_due=True,
                                                                    status_changed_at=timezone.now())
    checks.push_away(sms_portal, SENDERS_CHECK)
    ms_fake_portal.fail_next("messageservice.message.status.update", code, description)

    delivery.push_statuses.apply(args=[[sms_portal.pk]])

    assert ms_fake_portal.count("messageservice.message.status.update", error=code) == 1
    assert not checks.is_due(sms_portal, SENDERS_CHECK) and checks.trigger_entries(sms_portal, SENDERS_CHECK) == []


def test_a_push_still_succeeds_after_bitrix24_dropped_our_sender(client, sms_portal, ms_fake_portal,
                                                                 django_capture_on_commit_callbacks):
    """Why pushes are no trigger: the sender's absence does not show in their answers."""
    payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, "+79991234567", "Hi")
    with django_capture_on_commit_callbacks(execute=True):
        client.post(handler_path(ms_fake_portal, SENDER_CODE), data=payload)
    Message.objects.filter(message_id=payload["message_id"]).update(status="delivered", push_due=True,
                                                                    status_changed_at=timezone.now())
    state(ms_fake_portal)["senders"].clear()

    delivery.push_statuses.apply(args=[[sms_portal.pk]])

    assert Message.objects.get(message_id=payload["message_id"]).pushed_status == "delivered"


def stray_sender(fake, portal_handler_of: str) -> None:
    """Bitrix24 still has a sender of ours we removed (our delete never reached it)."""
    with fake.lock:
        senders_ = state(fake)["senders"]
        senders_["old.sender"] = {**senders_[portal_handler_of], "CODE": "old.sender", "NAME": "Old"}


def test_an_authenticated_message_for_a_sender_we_do_not_have_makes_the_check_due_and_the_tick_deletes_it(
        client, sms_account, ms_fake_portal):
    portal = sms_account.portal
    checks.push_away(portal, SENDERS_CHECK)
    stray_sender(ms_fake_portal, SENDER_CODE)
    payload = send_from_bitrix24(ms_fake_portal, "old.sender", "+79991234567", "Hi")

    response = client.post(handler_path(ms_fake_portal, "old.sender"), data=payload)

    assert response.status_code == 404 and "unknown sender code" in response.json()["error"]
    assert checks.is_due(portal, SENDERS_CHECK)
    assert checks.trigger_entries(portal, SENDERS_CHECK) == [
        "senders check due now: a message came for sender old.sender, which is not active here"]
    # a second such message while the check is due: neither a second journal line nor an earlier run
    client.post(handler_path(ms_fake_portal, "old.sender"),
                data=send_from_bitrix24(ms_fake_portal, "old.sender", "+79991234567", "Again"))
    assert len(checks.trigger_entries(portal, SENDERS_CHECK)) == 1

    reconcile_all_senders.delay().get()

    assert list(senders(ms_fake_portal)) == [SENDER_CODE]


@pytest.mark.parametrize("forgery", ["bad token", "other member", "no auth block"])
def test_a_forged_handler_post_for_an_unknown_sender_makes_nothing_due(client, sms_account, ms_fake_portal, forgery):
    portal = sms_account.portal
    checks.push_away(portal, SENDERS_CHECK)
    stray_sender(ms_fake_portal, SENDER_CODE)
    payload = send_from_bitrix24(ms_fake_portal, "old.sender", "+79991234567", "Hi",
                                 with_auth=forgery != "no auth block")
    if forgery == "bad token":
        payload["auth[application_token]"] = "0123456789abcdef0123456789abcdef"
    elif forgery == "other member":
        payload["auth[member_id]"] = "0123456789abcdef0123456789abcdef"
    calls = len(ms_fake_portal.requests)

    response = client.post(handler_path(ms_fake_portal, "old.sender"), data=payload)

    assert response.status_code == 404
    assert not checks.is_due(portal, SENDERS_CHECK) and checks.trigger_entries(portal, SENDERS_CHECK) == []
    assert len(ms_fake_portal.requests) == calls


def test_a_portal_without_a_stored_application_token_cannot_trigger_from_the_handler(client, sms_account,
                                                                                     ms_fake_portal):
    portal = sms_account.portal
    type(portal).objects.filter(pk=portal.pk).update(application_token_hash="")
    checks.push_away(portal, SENDERS_CHECK)
    stray_sender(ms_fake_portal, SENDER_CODE)

    client.post(handler_path(ms_fake_portal, "old.sender"),
                data=send_from_bitrix24(ms_fake_portal, "old.sender", "+79991234567", "Hi"))

    assert not checks.is_due(portal, SENDERS_CHECK)
