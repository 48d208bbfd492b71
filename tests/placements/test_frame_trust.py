"""Frame trust (issue 10): made-up tokens cost the portal nothing, hostile input never 500s, admin rights
are re-proven, and frame tokens die with the installation they were issued for."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from tenants.models import Portal

from .conftest import APP_URL, CONSENT_URL, LIST_MENU_URL, api, frame_token, post_frame

pytestmark = pytest.mark.django_db

DEEP = "[" * 20_000 + "]" * 20_000  # deep enough for a RecursionError, within the body limit


def test_made_up_frame_tokens_make_no_request_to_the_portal(client, installed_portal, fake_portal):
    before = len(fake_portal.requests)

    statuses = [post_frame(client, APP_URL, fake_portal, AUTH_ID=f"made-up-token-{i:020d}").status_code
                for i in range(10)]

    assert statuses == [403] * 10
    assert len(fake_portal.requests) == before


@pytest.mark.parametrize("url", [APP_URL, LIST_MENU_URL, CONSENT_URL])
def test_deeply_nested_placement_options_are_a_400_without_any_valid_token(client, installed_portal, fake_portal,
                                                                          url):
    response = post_frame(client, url, fake_portal, "CRM_CONTACT_LIST_MENU", {"ID": "1"},
                          AUTH_ID="made-up-token-00000000000000", PLACEMENT_OPTIONS=DEEP)

    assert response.status_code == 400
    assert "PLACEMENT_OPTIONS" in response.json()["error"]


def test_a_huge_auth_expires_is_a_400(client, installed_portal, fake_portal):
    response = post_frame(client, APP_URL, fake_portal, AUTH_EXPIRES="1e17")

    assert response.status_code == 400
    assert "AUTH_EXPIRES" in response.json()["error"]


def test_a_frame_without_domain_is_a_403_with_the_reason(client, installed_portal, fake_portal):
    response = post_frame(client, APP_URL, fake_portal, DOMAIN=None)

    assert response.status_code == 403
    assert response.json()["error"] == "missing DOMAIN"


def test_a_demoted_admin_loses_admin_rights_once_the_claim_is_old(client, installed_portal, fake_portal, settings):
    fake_portal.add_user(5, is_admin=True)
    token = frame_token(post_frame(client, APP_URL, fake_portal, user_id=5, is_admin=True))
    assert api(client, "GET", "/b24/placements/api/accounts/", token).status_code == 200

    fake_portal.set_admin(5, False)
    settings.B24_ADMIN_PROOF_SECONDS = -1  # every admin claim is now older than the proof window

    assert api(client, "GET", "/b24/placements/api/accounts/", token).status_code == 403


def test_frame_tokens_from_before_an_uninstall_do_not_work_after_a_reinstall(client, installed_portal, fake_portal):
    token = frame_token(post_frame(client, APP_URL, fake_portal))
    assert api(client, "GET", "/b24/placements/api/accounts/", token).status_code == 200

    # Uninstall, then a reinstall: the portal is active again, with a new install generation.
    Portal.objects.filter(pk=installed_portal.pk).update(install_generation=installed_portal.install_generation + 2)

    response = api(client, "GET", "/b24/placements/api/accounts/", token)
    assert response.status_code == 401
    assert "reinstalled" in response.json()["detail"]


nested_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=3), children, max_size=3), max_leaves=30)


@hsettings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(options=nested_json, depth=st.integers(min_value=0, max_value=5000))
def test_any_placement_options_never_500(client, installed_portal, fake_portal, options, depth):
    raw = "[" * depth + json.dumps(options) + "]" * depth
    response = post_frame(client, LIST_MENU_URL, fake_portal, "CRM_CONTACT_LIST_MENU", {"ID": "1"},
                          AUTH_ID="made-up-token-00000000000000", PLACEMENT_OPTIONS=raw)

    assert response.status_code in (400, 403)
