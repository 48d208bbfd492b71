"""Uninstall with CLEAN=1 deletes the portal's SMS settings and data (issue 10 finding 9); CLEAN=0 keeps them."""

from __future__ import annotations

import pytest

from messageservice.models import Message, MessageCrmLink, PhoneConsent, ProviderAccount, PurgedDailyCount
from tests.conftest import post_event
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24
from tests.messageservice.conftest import SENDER_CODE

pytestmark = pytest.mark.django_db


@pytest.fixture
def portal_with_data(client, sms_portal, ms_fake_portal, fake_smsru, django_capture_on_commit_callbacks):
    for text in ("one", "two"):
        payload = send_from_bitrix24(ms_fake_portal, SENDER_CODE, "+79991234567", text)
        with django_capture_on_commit_callbacks(execute=True):
            assert client.post(handler_path(ms_fake_portal, SENDER_CODE), data=payload).status_code == 200
    PhoneConsent.objects.create(portal=sms_portal, phone="+79990000000", opted_in=False, source="widget")
    return sms_portal


def test_clean_uninstall_deletes_accounts_messages_and_consent_but_keeps_daily_counts(
        client, portal_with_data, ms_fake_portal):
    response = post_event(client, ms_fake_portal.onappuninstall(clean=True))

    assert response.status_code == 200
    assert not ProviderAccount.objects.filter(portal=portal_with_data).exists()
    assert not Message.objects.filter(portal=portal_with_data).exists()
    assert not MessageCrmLink.objects.filter(message__portal=portal_with_data).exists()
    assert not PhoneConsent.objects.filter(portal=portal_with_data).exists()
    kept = PurgedDailyCount.objects.filter(portal=portal_with_data)
    assert sum(kept.values_list("count", flat=True)) == 2
    assert portal_with_data.journal.exists()


def test_uninstall_without_clean_keeps_sms_data_for_a_reinstall(client, portal_with_data, ms_fake_portal):
    post_event(client, ms_fake_portal.onappuninstall(clean=False))

    assert ProviderAccount.objects.filter(portal=portal_with_data).count() == 1
    assert Message.objects.filter(portal=portal_with_data).count() == 2
    assert PhoneConsent.objects.filter(portal=portal_with_data).count() == 1
