"""Template placeholders: known names only at save, values read from the CRM item's records as data, and a
missing value filled in as empty text."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from cabinet.placeholders import check_placeholders, fill, values_for


def test_unknown_placeholders_are_refused_with_their_names():
    with pytest.raises(ValidationError) as caught:
        check_placeholders("Hi {first_name}, your {ordr} from {compnay}")

    (text,) = caught.value.message_dict["body"]
    assert "{ordr}" in text and "{compnay}" in text and "{first_name}" in text.split("known:")[1]


def test_known_placeholders_and_other_braces_are_accepted():
    check_placeholders("Hi {name} ({first_name} {last_name}) of {company}: {phone} {email} {title} #{id} {5} { x }")


def test_a_deals_values_come_from_its_contact_company_and_itself():
    records = {"person": {"NAME": "Ivan", "LAST_NAME": "Petrov", "EMAIL": [{"VALUE": "", "VALUE_TYPE": "WORK"},
                                                                             {"VALUE": "ivan@example.com"}]},
               "company": {"TITLE": "Acme"}, "item": {"TITLE": "Big deal"}}

    values = values_for(records, item_id=42, phone="+79991234567")

    assert fill("{name}|{first_name}|{last_name}|{company}|{title}|{phone}|{email}|{id}", values) == (
        "Ivan Petrov|Ivan|Petrov|Acme|Big deal|+79991234567|ivan@example.com|42")


def test_a_lead_without_a_company_record_uses_its_company_title():
    values = values_for({"person": {"NAME": "Olga"}, "company": {}, "item": {"COMPANY_TITLE": "Lead Co"}},
                        item_id=1, phone="")

    assert values["company"] == "Lead Co" and values["name"] == "Olga"


def test_missing_values_are_empty_text_never_an_error():
    values = values_for({"person": {"NAME": None, "LAST_NAME": {"odd": 1}}, "item": {}}, item_id=7, phone="")

    assert fill("Dear {first_name} {last_name} of {company}, {unknown_in_an_old_template}!", values) == "Dear   of , !"


def test_a_company_is_named_by_its_title():
    values = values_for({"person": {}, "company": {"TITLE": "Acme"}, "item": {"TITLE": "Acme"}}, item_id=3, phone="")

    assert values["name"] == "Acme"
