"""Hostile JSON bodies to the frame API (issue 10, finding 5): the project's DRF parser
(b24portal.parsers.LimitedJSONParser) answers a body nested too deeply, too large or not JSON with a 400
and the reason; with no or a foreign token it is a 401/403 first. Never a 500, nothing stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from messageservice.models import Message, PhoneConsent, ProviderAccount

from .conftest import CONSENT_URL, frame_token, post_frame

pytestmark = pytest.mark.django_db

DEEP = "[" * 20_000 + "]" * 20_000  # a RecursionError for json.loads, within INPUT_JSON_MAX_BYTES


def consent_options(item_id: int) -> dict[str, Any]:
    return {"MODE": "edit", "ENTITY_ID": "CRM_CONTACT", "FIELD_NAME": "UF_CRM_SMS_CONSENT",
            "ENTITY_VALUE_ID": str(item_id), "MULTIPLE": "N", "MANDATORY": "N"}


@pytest.fixture
def endpoints(client, installed_portal, fake_portal, contact, sms_account, owner) -> list[tuple[str, str, str]]:
    """(method, url, token) for every frame API endpoint that reads a body, each with a token it accepts."""
    item_token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", consent_options(contact)))
    account = sms_account.pk
    return [
        ("POST", "/b24/placements/api/consent/", item_token),
        ("POST", f"/b24/placements/api/items/CONTACT/{contact}/messages/", item_token),
        ("POST", "/b24/placements/api/accounts/", owner.token),
        ("PATCH", f"/b24/placements/api/accounts/{account}/", owner.token),
        ("POST", f"/b24/placements/api/accounts/{account}/test/", owner.token),
        ("POST", f"/b24/placements/api/accounts/{account}/deactivate/", owner.token),
    ]


def stored() -> tuple[Any, ...]:
    return (PhoneConsent.objects.count(), Message.objects.count(),
            sorted(ProviderAccount.objects.values_list("pk", "name", "is_active")))


def send_raw(client, method: str, url: str, token: str | None, body: str | bytes):
    headers = {"HTTP_AUTHORIZATION": f"Frame {token}"} if token else {}
    return getattr(client, method.lower())(url, data=body, content_type="application/json", **headers)


def test_a_20000_deep_body_is_a_400_with_the_reason_on_every_endpoint(client, endpoints):
    before = stored()
    for method, url, token in endpoints:
        response = send_raw(client, method, url, token, DEEP)
        assert response.status_code == 400, (url, response.content)
        assert "nested too deeply" in response.json()["detail"], url
    assert stored() == before


def test_an_oversized_or_broken_body_is_a_400(client, endpoints, settings):
    method, url, token = endpoints[0]
    too_large = json.dumps({"phone": "+79991234567", "opted_in": True, "pad": "x" * settings.INPUT_JSON_MAX_BYTES})
    assert "too large" in send_raw(client, method, url, token, too_large).json()["detail"]
    assert send_raw(client, method, url, token, '{"phone": NaN}').status_code == 400
    assert send_raw(client, method, url, token, b"\xff\xfe{}").status_code == 400
    assert not PhoneConsent.objects.exists()


def test_without_a_valid_token_a_deep_body_is_a_401_or_403(client, endpoints, member):
    before = stored()
    for method, url, _token in endpoints:
        assert send_raw(client, method, url, None, DEEP).status_code == 401
        assert send_raw(client, method, url, "not-a-token", DEEP).status_code == 401
        assert send_raw(client, method, url, member.token, DEEP).status_code in (400, 403)
    assert stored() == before


nested_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=3), children, max_size=3), max_leaves=30)


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), value=nested_json, depth=st.sampled_from([33, 34, 100, 200, 5000, 20_000]),
       opener=st.sampled_from(["[", '{"a":']), with_token=st.booleans())
def test_any_too_deeply_nested_body_to_the_frame_api_never_500s(client, endpoints, data, value, depth, opener, with_token):
    method, url, token = data.draw(st.sampled_from(endpoints))
    closer = "]" if opener == "[" else "}"
    body = opener * depth + json.dumps(value) + closer * depth
    before = stored()

    response = send_raw(client, method, url, token if with_token else None, body)

    assert response.status_code in (400, 401, 403), (url, depth, response.status_code, response.content[:200])
    assert stored() == before
