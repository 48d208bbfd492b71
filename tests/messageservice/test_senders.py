"""Provider accounts as Bitrix24 senders: the install step, sync on change, the periodic reconcile."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import connection

from installs.steps import get_install_step
from messageservice import accounts
from messageservice.models import ProviderAccount
from messageservice.tasks import reconcile_all_senders
from oauth.client import PortalClient
from tenants import schedule
from tenants.journal import Actor
from tenants.models import JournalEntry
from tests.fakes.b24_messageservice import senders, state
from tests.messageservice.conftest import SENDER_CODE, create_account

pytestmark = pytest.mark.django_db

HANDLER_PREFIX = "https://app.b24portal.test/b24/messageservice/"


def run_step(portal) -> str:
    """The registered install step, as the install run (install, update, staff re-run) calls it."""
    step = get_install_step("sms_senders")
    assert step is not None and step.order == 50
    return step.func(portal, PortalClient(portal))


def test_an_account_is_registered_as_a_sender_with_the_portals_handler_url(sms_account, ms_fake_portal):
    registered = senders(ms_fake_portal)
    portal = sms_account.portal
    assert list(registered) == [SENDER_CODE]
    assert registered[SENDER_CODE]["HANDLER"] == f"{HANDLER_PREFIX}{portal.handler_key}/"
    assert registered[SENDER_CODE]["TYPE"] == "SMS" and registered[SENDER_CODE]["NAME"] == "B24 Portal SMS"
    assert sms_account.registered_code == SENDER_CODE


def test_a_portal_without_accounts_passes_the_step_without_asking_bitrix24(ms_fake_portal, b24_portal):
    assert run_step(b24_portal) == "no SMS provider accounts"
    assert ms_fake_portal.count("messageservice.sender.list") == 0


def test_the_install_step_registers_every_active_account_and_is_idempotent(
        sms_account, ms_fake_portal, django_capture_on_commit_callbacks, fake_smsru):
    portal = sms_account.portal
    second = create_account(portal, django_capture_on_commit_callbacks, code="second.sender-2",
                            credentials=fake_smsru.credentials, base_url=fake_smsru.base_url)
    state(ms_fake_portal)["senders"].clear()  # e.g. lost on Bitrix24's side

    assert run_step(portal) == f"added {SENDER_CODE}, {second.code}"
    assert run_step(portal) == "all senders in place"
    assert set(senders(ms_fake_portal)) == {SENDER_CODE, second.code}
    assert ms_fake_portal.count("messageservice.sender.add", status=400) == 0


def test_reconcile_re_registers_senders_an_app_update_dropped_and_journals_it(sms_account, ms_fake_portal):
    ms_fake_portal.onappupdate()  # Bitrix24 deletes the app's senders on update
    assert senders(ms_fake_portal) == {}
    schedule.mark_due(sms_account.portal, "senders")  # what our ONAPPUPDATE handler does

    reconcile_all_senders.delay()

    assert list(senders(ms_fake_portal)) == [SENDER_CODE]
    entry = JournalEntry.objects.filter(portal=sms_account.portal, kind=JournalEntry.Kind.BINDING).first()
    assert entry.message == f"SMS senders repaired: added {SENDER_CODE}"
    assert entry.details["added"] == [SENDER_CODE]


def test_reconcile_of_a_portal_in_order_lists_once_and_changes_nothing(sms_account, ms_fake_portal):
    before = len(ms_fake_portal.requests)
    schedule.mark_due(sms_account.portal, "senders")
    reconcile_all_senders.delay()
    calls = [r.method for r in ms_fake_portal.requests[before:]]
    assert calls == ["messageservice.sender.list"]


def test_reconcile_deletes_codes_of_ours_no_active_account_uses(sms_account, ms_fake_portal):
    state(ms_fake_portal)["senders"]["old_code"] = {"CODE": "old_code", "HANDLER": "https://x.test/", "NAME": "x"}
    schedule.mark_due(sms_account.portal, "senders")
    reconcile_all_senders.delay()
    assert list(senders(ms_fake_portal)) == [SENDER_CODE]


def test_a_sender_already_installed_is_updated_to_our_handler(
        ms_fake_portal, b24_portal, django_capture_on_commit_callbacks, fake_smsru):
    state(ms_fake_portal)["senders"][SENDER_CODE] = {"CODE": SENDER_CODE, "HANDLER": "https://old.test/h/",
                                                     "NAME": "old"}
    account = create_account(b24_portal, django_capture_on_commit_callbacks,
                             credentials=fake_smsru.credentials, base_url=fake_smsru.base_url)
    assert account.registration_state == ProviderAccount.Registration.REGISTERED
    assert ms_fake_portal.count("messageservice.sender.add", status=400) == 1  # ERROR_SENDER_ALREADY_INSTALLED
    assert senders(ms_fake_portal)[SENDER_CODE]["HANDLER"].startswith(HANDLER_PREFIX)


def test_deactivating_an_account_deletes_its_sender(sms_account, ms_fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_deactivate_account(sms_account.portal, sms_account, actor=Actor("staff", "tester"))
    sms_account.refresh_from_db()
    assert senders(ms_fake_portal) == {}
    assert not sms_account.is_active and sms_account.registration_state == ProviderAccount.Registration.REMOVED
    assert not accounts.accounts_for(sms_account.portal).exists()
    assert accounts.accounts_for(sms_account.portal, active_only=False).get() == sms_account


def test_changing_the_code_replaces_the_sender(sms_account, ms_fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_save_account(sms_account.portal, data={"code": "renamed", "name": "New name"},
                                 account=sms_account, actor=Actor("staff", "tester"))
    registered = senders(ms_fake_portal)
    assert list(registered) == ["renamed"] and registered["renamed"]["NAME"] == "New name"


@pytest.mark.parametrize(("data", "field"), [
    ({"code": "bad code!"}, "code"),
    ({"code": ""}, "code"),
    ({"base_url": "ftp://carrier.test/"}, "base_url"),
    ({"base_url": "/relative"}, "base_url"),
    ({"carrier": "pigeon"}, "carrier"),
    ({"credentials": {}}, "credentials"),
    ({"options": {"failure_rate": 2}}, "options"),
    ({"name": ""}, "name"),
])
def test_invalid_account_data_is_refused_with_field_errors(b24_portal, data, field):
    base = {"carrier": "smsru", "code": "ok", "name": "n", "credentials": {"api_id": "x"}}
    with pytest.raises(ValidationError) as exc:
        accounts.do_save_account(b24_portal, data={**base, **data}, actor=Actor("staff", "tester"))
    assert field in exc.value.message_dict
    assert not ProviderAccount.objects.exists()


def test_a_code_is_unique_within_a_portal(sms_account):
    with pytest.raises(ValidationError) as exc:
        accounts.do_save_account(sms_account.portal, data={"carrier": "sandbox", "code": SENDER_CODE, "name": "x"},
                                 actor=Actor("staff", "tester"))
    assert "code" in exc.value.message_dict


def test_credentials_are_encrypted_at_rest_and_kept_when_left_blank(sms_account, fake_smsru,
                                                                    django_capture_on_commit_callbacks):
    with connection.cursor() as cursor:
        cursor.execute("SELECT credentials FROM messageservice_provideraccount WHERE id = %s", [sms_account.pk])
        (raw,) = cursor.fetchone()
    assert raw.startswith("fernet:") and fake_smsru.api_id not in raw

    with django_capture_on_commit_callbacks(execute=True):
        accounts.do_save_account(sms_account.portal, data={"name": "Renamed", "credentials": {"api_id": ""}},
                                 account=sms_account, actor=Actor("staff", "tester"))
    sms_account.refresh_from_db()
    assert sms_account.credentials == {"api_id": fake_smsru.api_id}


def test_another_portals_account_is_not_found(sms_account, outsider):
    with pytest.raises(ProviderAccount.DoesNotExist):
        accounts.get_account(outsider.portal, sms_account.pk)
    assert accounts.get_account(sms_account.portal, sms_account.pk) == sms_account
