"""Malformed, forged or oversized handler POSTs: a 4xx with a reason, nothing stored, never a 500."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from messageservice.models import Message
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24
from tests.messageservice.conftest import SENDER_CODE

pytestmark = pytest.mark.django_db


def assert_refused(response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, response.content
    if status is not None:
        assert response.status_code == status, response.content
    assert response.json()["error"]
    assert not Message.objects.exists()


@pytest.fixture
def good(sms_portal, ms_fake_portal):
    return handler_path(ms_fake_portal, SENDER_CODE), send_from_bitrix24(ms_fake_portal, SENDER_CODE,
                                                                         "+79991234567", "Hi")


@pytest.mark.parametrize("missing", ["type", "code", "message_id", "message_body"])
def test_a_payload_without_a_required_field_is_refused(client, good, missing):
    path, payload = good
    del payload[missing]
    payload.pop("properties[message_text]", None)
    assert_refused(client.post(path, data=payload), 400)


@pytest.mark.parametrize(("field", "value"), [
    ("message_id", "1"), ("message_id", "z" * 32), ("type", "MMS"), ("code", "bad code"),
    ("bindings[0][OWNER_ID]", "-1"), ("bindings[0][OWNER_TYPE_ID]", "x"), ("ts", "yesterday"),
    ("message_to", "1" * 65),
])
def test_a_malformed_field_is_refused(client, good, field, value):
    path, payload = good
    payload[field] = value
    assert_refused(client.post(path, data=payload), 400)


def test_an_oversized_body_is_refused(client, good, settings):
    path, payload = good
    payload["message_body"] = "x" * (settings.B24_MAX_BODY_BYTES + 1)
    assert_refused(client.post(path, data=payload), 413)


def test_a_json_body_is_refused(client, good):
    path, _payload = good
    assert_refused(client.post(path, data="{}", content_type="application/json"), 415)


def test_conflicting_nested_keys_are_refused(client, good):
    path, payload = good
    body = urlencode({**payload, "auth": "x"})
    assert_refused(client.post(path, data=body, content_type="application/x-www-form-urlencoded"), 400)


def test_get_is_not_allowed(client, good):
    assert client.get(good[0]).status_code == 405


form_keys = st.one_of(
    st.sampled_from(["type", "code", "message_id", "message_to", "message_body", "ts", "module_id",
                     "bindings[0][OWNER_TYPE_ID]", "bindings[0][OWNER_ID]", "bindings", "bindings[]",
                     "document_id[]", "document_id[0]", "workflow_id", "properties[phone_number]",
                     "auth[member_id]", "auth[application_token]", "auth", "auth[]", "a[b][c][d][e][f][g][h][i]"]),
    st.text(min_size=1, max_size=30),
)
form_values = st.one_of(
    st.sampled_from(["SMS", SENDER_CODE, "65575980fa531ac284c2ee68f81ebebd", "+79991234567", "crm", "bizproc",
                     "1", "0", "-5", "", "LEAD_98"]),
    st.text(max_size=80),
)


@hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.dictionaries(form_keys, form_values, max_size=12))
def test_random_forms_never_fail_with_500_and_store_only_complete_messages(client, good, payload):
    path, _valid = good
    Message.objects.all().delete()
    response = client.post(path, data=payload)
    assert response.status_code < 500, (payload, response.content)
    if response.status_code == 200:  # hypothesis happened to build a complete, valid message
        assert payload.get("type", "").upper() == "SMS" and payload.get("code") == SENDER_CODE
        assert Message.objects.filter(message_id=payload["message_id"].lower()).exists()
    else:
        assert 400 <= response.status_code < 500 and response.json()["error"]
        assert not Message.objects.exists()


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(max_size=80))
def test_random_handler_keys_are_404_or_405(client, good, key):
    _path, payload = good
    response = client.post(f"/b24/messageservice/{quote(key, safe='')}/", data=payload)
    assert 400 <= response.status_code < 500
    assert not Message.objects.exists()
