"""Per-phone SMS consent: one decision per portal and number, read in any number format."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from messageservice.consent import PhoneConsent, consent_for, do_set_consent, is_opted_out
from tests.factories import PortalFactory

pytestmark = pytest.mark.django_db


def test_a_decision_is_stored_once_per_number_in_e164_and_replaced_by_the_next():
    portal = PortalFactory(phone_region="RU")
    do_set_consent(portal, phone="8 999 123-45-67", opted_in=False, user_id=4, source="widget")
    assert is_opted_out(portal, "+79991234567")
    consent = do_set_consent(portal, phone="+7 (999) 123 45 67", opted_in=True, user_id=5, source="staff")
    assert PhoneConsent.objects.get() == consent
    assert consent.phone == "+79991234567" and consent.opted_in and consent.changed_by_user_id == 5
    assert not is_opted_out(portal, "89991234567")


def test_consent_is_per_portal():
    portal, other = PortalFactory(phone_region="RU"), PortalFactory(phone_region="RU")
    do_set_consent(portal, phone="+79991234567", opted_in=False, user_id=None, source="import")
    assert is_opted_out(portal, "+79991234567") and not is_opted_out(other, "+79991234567")


def test_consent_for_answers_each_number_as_given_in_one_query(django_assert_num_queries):
    portal = PortalFactory(phone_region="RU")
    out = do_set_consent(portal, phone="+79991234567", opted_in=False, user_id=1, source="widget")
    with django_assert_num_queries(1):
        answer = consent_for(portal, ["89991234567", "+79990000001", "garbage"])
    assert answer == {"89991234567": out, "+79990000001": None, "garbage": None}


def test_an_unreadable_number_is_refused_with_a_field_error():
    with pytest.raises(ValidationError) as exc:
        do_set_consent(PortalFactory(), phone="not a phone", opted_in=False, user_id=1, source="widget")
    assert "phone" in exc.value.message_dict
    assert not PhoneConsent.objects.exists()
