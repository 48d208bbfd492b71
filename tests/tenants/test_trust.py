"""Who may install and update (issue 10): an administrator of that portal, with a token of this application,
for that member_id, as the OAuth server and app.info say; and nobody unauthenticated spends a portal's
REST budget."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
import requests

from oauth.models import PortalToken
from tenants.models import Portal
from tests.conftest import post_event, post_install_frame

pytestmark = pytest.mark.django_db


def _non_admin_install(fake_portal, user_id=7, application_token="chosen-by-the-attacker-000000"):
    fake_portal.add_user(user_id, is_admin=False)
    query, form = fake_portal.install_frame(user_id=user_id, is_admin=False)
    form["APPLICATION_TOKEN"] = application_token
    return query, form


def test_a_non_admin_cannot_reinstall_an_installed_portal_nor_change_its_tokens(client, installed_portal,
                                                                               fake_portal):
    service_before = PortalToken.objects.get(portal=installed_portal, is_service=True)
    query, form = _non_admin_install(fake_portal)
    # Same application token as the portal's (so the early application-token rule does not decide it).
    form["APPLICATION_TOKEN"] = fake_portal.application_token

    response = client.post(f"/b24/install/?{urlencode(query)}", data=form)

    assert response.status_code == 403
    assert "administrator" in response.json()["error"]
    installed_portal.refresh_from_db()
    assert installed_portal.application_token_matches(fake_portal.application_token)
    service_after = PortalToken.objects.get(portal=installed_portal, is_service=True)
    assert (service_after.user_id, service_after.access_token) == (service_before.user_id, service_before.access_token)
    assert not PortalToken.objects.filter(portal=installed_portal, user_id=7).exists()


def test_a_non_admin_takeover_then_forged_clean_uninstall_purges_nothing(client, installed_portal, fake_portal):
    """The attack of finding 1: re-POST the install frame with a chosen APPLICATION_TOKEN, then use it to
    forge ONAPPUNINSTALL with CLEAN=1."""
    query, form = _non_admin_install(fake_portal, application_token="chosen-by-the-attacker-000000")

    takeover = client.post(f"/b24/install/?{urlencode(query)}", data=form)
    forged = fake_portal.onappuninstall(clean=True)
    forged["auth[application_token]"] = "chosen-by-the-attacker-000000"
    wipe = post_event(client, forged)

    assert takeover.status_code == 403
    assert wipe.status_code == 403
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.ACTIVE
    assert installed_portal.tokens.filter(is_service=True).exists()


def test_an_installed_portals_application_token_is_not_replaced_by_an_admin_repost(client, installed_portal,
                                                                                  fake_portal):
    query, form = fake_portal.install_frame()
    form["APPLICATION_TOKEN"] = "another-application-token-0000"

    response = client.post(f"/b24/install/?{urlencode(query)}", data=form)

    assert response.status_code == 403
    installed_portal.refresh_from_db()
    assert installed_portal.application_token_matches(fake_portal.application_token)


def test_onappupdate_with_a_non_admins_token_changes_nothing(client, installed_portal, fake_portal):
    fake_portal.add_user(7, is_admin=False)
    payload = fake_portal.onappupdate(user_id=7, is_admin=False)

    response = post_event(client, payload)

    assert response.status_code == 403
    installed_portal.refresh_from_db()
    assert not installed_portal.application_token_matches(fake_portal.application_token)  # the old one stays
    assert installed_portal.install_runs.count() == 1


def test_onappupdate_whose_version_is_not_app_infos_changes_nothing(client, installed_portal, fake_portal):
    payload = fake_portal.onappupdate()
    payload["data[VERSION]"] = str(int(payload["data[VERSION]"]) + 5)

    response = post_event(client, payload)

    assert response.status_code == 403
    assert "VERSION" in response.json()["error"]
    installed_portal.refresh_from_db()
    assert not installed_portal.application_token_matches(fake_portal.application_token)


def test_a_token_of_another_application_is_refused(client, fake_portal, settings):
    settings.B24_CLIENT_ID = "local.another.app"  # app.info's CODE is the fake cloud's client id, not this

    response = post_install_frame(client, fake_portal)

    assert response.status_code == 403
    assert "another application" in response.json()["error"]
    assert not Portal.objects.exists()


def test_member_id_squatting_is_refused_and_the_real_portal_installs(client, b24_cloud, fake_portal):
    """Finding 2: with my own portal's token and domain, claim another portal's member_id."""
    mine = b24_cloud.create_portal()
    query, form = mine.install_frame()
    form["member_id"] = fake_portal.member_id

    squat = client.post(f"/b24/install/?{urlencode(query)}", data=form)
    genuine = post_install_frame(client, fake_portal)

    assert squat.status_code == 403
    assert genuine.status_code == 200
    assert Portal.objects.get(member_id=fake_portal.member_id).domain == fake_portal.domain


def test_an_https_endpoint_is_never_downgraded(client, installed_portal, fake_portal):
    Portal.objects.filter(pk=installed_portal.pk).update(rest_endpoint=f"https://{fake_portal.domain}/rest/")
    query, form = fake_portal.install_frame()  # PROTOCOL=0

    response = client.post(f"/b24/install/?{urlencode(query)}", data=form)

    assert response.status_code == 403
    installed_portal.refresh_from_db()
    assert installed_portal.rest_endpoint.startswith("https://")


def test_a_made_up_token_costs_the_portal_no_request(client, fake_portal):
    query, form = fake_portal.install_frame()
    before = len(fake_portal.requests)
    form["AUTH_ID"] = "made-up-token-0000000000000000"
    form["REFRESH_ID"] = "made-up-refresh-00000000000000"

    responses = [client.post(f"/b24/install/?{urlencode(query)}", data=form).status_code for _ in range(5)]

    assert responses == [403] * 5
    assert len(fake_portal.requests) == before


def test_proofs_that_reach_a_portal_are_capped_per_minute(client, fake_portal, settings):
    """Valid tokens of non-admin users do reach the portal (user.admin), but only within the proof budget."""
    settings.B24_PROOF_RATE_PER_MINUTE = 1.0
    settings.B24_PROOF_BURST = 3
    settings.B24_THROTTLE_FRAMES = "1000/min"
    fake_portal.add_user(7, is_admin=False)
    before = fake_portal.count("batch")

    statuses = []
    for _ in range(8):
        query, form = fake_portal.install_frame(user_id=7, is_admin=False)
        statuses.append(client.post(f"/b24/install/?{urlencode(query)}", data=form).status_code)

    assert statuses[:3] == [403, 403, 403]
    assert set(statuses[3:]) == {429}
    assert fake_portal.count("batch") - before == 3


def test_install_posts_are_throttled_per_source_address(client, fake_portal, settings):
    settings.B24_THROTTLE_FRAMES = "3/min"
    query, form = fake_portal.install_frame()
    form["AUTH_ID"] = "made-up-token-0000000000000000"

    statuses = [client.post(f"/b24/install/?{urlencode(query)}", data=form).status_code for _ in range(5)]

    assert statuses == [403, 403, 403, 429, 429]


def test_a_second_install_post_whose_refresh_token_is_spent_is_accepted_for_the_known_portal(
        client, fake_portal, django_capture_on_commit_callbacks):
    """The install frame and ONAPPINSTALL may carry one pair; the second finds it spent by the first."""
    from django.core.cache import cache

    query, form = fake_portal.install_frame()
    url = f"/b24/install/?{urlencode(query)}"
    with django_capture_on_commit_callbacks(execute=True):
        assert client.post(url, data=form).status_code == 200
    stored = PortalToken.objects.get(portal__member_id=fake_portal.member_id, is_service=True).access_token
    cache.clear()  # no remembered proof: the refresh token really is tried again, and is spent

    again = client.post(url, data=form)

    assert again.status_code == 200
    assert PortalToken.objects.get(portal__member_id=fake_portal.member_id, is_service=True).access_token == stored
    assert Portal.objects.get(member_id=fake_portal.member_id).install_runs.count() == 1


def test_a_spent_refresh_token_for_an_unknown_portal_is_refused(client, fake_portal, settings):
    query, form = fake_portal.install_frame()
    spent = requests.get(settings.B24_OAUTH_URL, timeout=5, params={
        "grant_type": "refresh_token", "refresh_token": form["REFRESH_ID"],
        "client_id": settings.B24_CLIENT_ID, "client_secret": settings.B24_CLIENT_SECRET})
    assert spent.status_code == 200  # someone else used the pair first

    response = client.post(f"/b24/install/?{urlencode(query)}", data=form)

    assert response.status_code == 403
    assert not Portal.objects.exists()
