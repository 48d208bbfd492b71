"""Malformed, forged, oversized or foreign input: a 4xx with a reason, nothing stored, no outbound call
to a disallowed host, never a 500."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import responses
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tenants.models import JournalEntry, Portal
from tests.conftest import post_event

pytestmark = pytest.mark.django_db

ENDPOINTS = ["/b24/install/", "/b24/events/"]


def assert_refused(response, status: int | None = None) -> None:
    assert 400 <= response.status_code < 500, response.content
    if status is not None:
        assert response.status_code == status
    assert response.json()["error"]
    assert not Portal.objects.exists()
    assert not JournalEntry.objects.exists()


@pytest.mark.parametrize("url", ENDPOINTS)
def test_an_empty_body_is_refused(client, url):
    assert_refused(client.post(url, data={}), 400)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_a_json_body_is_refused(client, url):
    assert_refused(client.post(url, data='{"event": "ONAPPINSTALL"}', content_type="application/json"), 415)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_an_oversized_body_is_refused(client, url, settings):
    payload = {"event": "ONAPPINSTALL", "data[X]": "x" * (settings.B24_MAX_BODY_BYTES + 1)}
    assert_refused(client.post(url, data=payload), 413)


@pytest.mark.parametrize("url", ENDPOINTS)
def test_get_is_not_allowed(client, url):
    assert client.get(url).status_code == 405


def test_conflicting_nested_keys_are_refused(client):
    response = client.post("/b24/events/", data=urlencode({"event": "ONAPPUNINSTALL", "auth": "x",
                                                           "auth[member_id]": "y"}),
                           content_type="application/x-www-form-urlencoded")
    assert_refused(response, 400)


@pytest.mark.parametrize("missing", ["AUTH_ID", "REFRESH_ID", "member_id"])
def test_an_install_frame_without_a_required_field_is_refused(client, fake_portal, missing):
    query, form = fake_portal.install_frame()
    del form[missing]
    assert_refused(client.post(f"/b24/install/?{urlencode(query)}", data=form), 400)


def test_an_install_frame_with_a_bad_protocol_is_refused(client, fake_portal):
    query, form = fake_portal.install_frame()
    query["PROTOCOL"] = "2"
    assert_refused(client.post(f"/b24/install/?{urlencode(query)}", data=form), 400)


@pytest.mark.parametrize("domain", ["127.0.0.1:1/../x", "user@bitrix24.com", "evil.com#.bitrix24.com",
                                    "x.bitrix24.com.evil.com", "localhost", "169.254.169.254"])
def test_tricky_domains_are_refused_without_an_outbound_call(client, fake_portal, domain):
    query, form = fake_portal.install_frame()
    query["DOMAIN"] = domain
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        response = client.post(f"/b24/install/?{urlencode(query)}", data=form)
        assert len(mocked.calls) == 0
    assert_refused(response)


def test_an_event_whose_client_endpoint_is_foreign_is_refused_without_a_call(client, fake_portal):
    payload = fake_portal.onappinstall()
    payload["auth[client_endpoint]"] = "https://attacker.example.com/rest/"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        response = post_event(client, payload, url="/b24/install/")
        assert len(mocked.calls) == 0
    assert_refused(response, 403)


def test_onappinstall_without_tokens_is_refused(client, fake_portal):
    payload = fake_portal.onappinstall()
    del payload["auth[access_token]"]
    assert_refused(post_event(client, payload, url="/b24/install/"), 400)


form_keys = st.one_of(
    st.sampled_from(["event", "auth[member_id]", "auth[application_token]", "auth[domain]", "data[CLEAN]",
                     "auth[access_token]", "auth[client_endpoint]", "AUTH_ID", "REFRESH_ID", "member_id",
                     "DOMAIN", "PROTOCOL", "auth", "data", "auth[]", "data[a][b][c]"]),
    st.text(min_size=1, max_size=30),
)
form_values = st.one_of(
    st.sampled_from(["ONAPPINSTALL", "ONAPPUNINSTALL", "ONAPPUPDATE", "ONAPPPAYMENT", "1", "0", "",
                     "portal.bitrix24.com", "https://portal.bitrix24.com/rest/", "a" * 32]),
    st.text(max_size=80),
)


@hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(url=st.sampled_from(ENDPOINTS), payload=st.dictionaries(form_keys, form_values, max_size=12))
def test_random_forms_never_store_anything_or_fail_with_500(client, url, payload):
    # Any outbound request would hit this mock: none may leave for a host we did not allow.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        response = client.post(url, data=payload)
        assert all("127.0.0.1" in call.request.url for call in mocked.calls)
    assert 400 <= response.status_code < 500, (payload, response.content)
    assert not Portal.objects.exists()
