"""Sign in with Bitrix24 on our own site (the OAuth authorization-code flow): the happy path, the session
the cabinet reads, and every way it can go wrong ending on a clear 4xx page with nothing stored."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django.test import Client

from oauth.models import PortalToken
from placements.frames import read_frame_token
from signin import flow
from tenants.models import Portal
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal

from .conftest import come_back, decide, start_signin

pytestmark = pytest.mark.django_db


def user_tokens(portal: Portal, user_id: int) -> PortalToken | None:
    return PortalToken.objects.filter(portal=portal, user_id=user_id).first()


def code_exchanges(cloud: FakeBitrix24Cloud) -> int:
    return cloud.oauth_count("authorization_code")


def assert_refused(response: Any, status: int, words: str) -> None:
    assert response.status_code == status, response.content
    assert words in response.content.decode()
    assert response["X-Frame-Options"] == "DENY"
    assert flow.FRAME_TOKEN_KEY not in response.wsgi_request.session


def test_the_home_page_offers_sign_in_with_bitrix24_and_cannot_be_framed(client: Client) -> None:
    response = client.get("/")

    assert response.status_code == 200
    assert "Sign in with Bitrix24" in response.content.decode()
    assert response["X-Frame-Options"] == "DENY"
    assert response["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_sign_in_sends_the_user_to_the_portals_authorize_page_with_a_state_bound_to_the_session(
        client: Client, installed_portal: Portal, fake_portal: FakePortal) -> None:
    response = client.post("/signin/", {"portal": f"http://{fake_portal.domain}/crm/deal/"})

    assert response.status_code == 302
    assert response["Location"].startswith(f"http://{fake_portal.domain}/oauth/authorize/?client_id=")
    saved = client.session[flow.STATE_KEY]
    assert saved["state"] in response["Location"] and saved["domain"] == fake_portal.domain


def test_a_user_signs_in_and_the_session_carries_their_frame_token(
        client: Client, installed_portal: Portal, fake_portal: FakePortal, b24_cloud: FakeBitrix24Cloud) -> None:
    fake_portal.add_user(5, is_admin=False)
    state = start_signin(client, fake_portal.domain)

    response = come_back(client, decide(fake_portal, state, user_id=5))

    assert response.status_code == 302 and response["Location"] == "/cabinet/"
    principal = read_frame_token(client.session[flow.FRAME_TOKEN_KEY])
    assert (principal.portal.pk, principal.user_id, principal.is_admin) == (installed_portal.pk, 5, False)
    token = user_tokens(installed_portal, 5)
    assert token is not None and token.is_service is False and token.is_admin is False
    assert code_exchanges(b24_cloud) >= 1
    cookie = response.cookies[settings.SESSION_COOKIE_NAME]
    assert cookie["samesite"] == "Lax" and cookie["secure"] and cookie["httponly"]
    assert client.session.get_expiry_age() == settings.B24_FRAME_TOKEN_MAX_AGE  # dies with the frame token


def test_an_administrator_is_proven_by_user_admin_and_the_installers_service_token_stays(
        client: Client, installed_portal: Portal, fake_portal: FakePortal) -> None:
    state = start_signin(client, fake_portal.domain)

    come_back(client, decide(fake_portal, state, user_id=1))

    assert read_frame_token(client.session[flow.FRAME_TOKEN_KEY]).is_admin is True
    token = user_tokens(installed_portal, 1)
    assert token is not None and token.is_service is True
    assert PortalToken.objects.filter(portal=installed_portal, is_service=True).count() == 1


def test_the_session_key_changes_at_sign_in(client: Client, installed_portal: Portal,
                                            fake_portal: FakePortal) -> None:
    state = start_signin(client, fake_portal.domain)
    before = client.session.session_key

    come_back(client, decide(fake_portal, state))

    assert client.session.session_key != before


def test_sign_out_ends_the_session(client: Client, installed_portal: Portal, fake_portal: FakePortal) -> None:
    come_back(client, decide(fake_portal, start_signin(client, fake_portal.domain)))
    assert "You are signed in" in client.get("/").content.decode()

    response = client.post("/signout/")

    assert response.status_code == 302 and response["Location"] == "/"
    assert flow.FRAME_TOKEN_KEY not in client.session
    assert "Sign in with Bitrix24" in client.get("/").content.decode()


def test_sign_out_needs_a_post_with_a_csrf_token(installed_portal: Portal) -> None:
    strict = Client(enforce_csrf_checks=True)

    assert strict.get("/signout/").status_code == 405
    assert strict.post("/signout/").status_code == 403


def test_a_replayed_state_is_refused(client: Client, installed_portal: Portal, fake_portal: FakePortal,
                                     b24_cloud: FakeBitrix24Cloud) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain))
    assert come_back(client, query).status_code == 302
    client.post("/signout/")
    exchanges = code_exchanges(b24_cloud)

    assert_refused(come_back(client, query), 403, "already used")
    assert code_exchanges(b24_cloud) == exchanges


def test_a_missing_state_is_refused(client: Client, installed_portal: Portal, fake_portal: FakePortal,
                                    b24_cloud: FakeBitrix24Cloud) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    del query["state"]
    exchanges = code_exchanges(b24_cloud)

    assert_refused(come_back(client, query), 400, "no state")
    assert code_exchanges(b24_cloud) == exchanges and user_tokens(installed_portal, 6) is None


def test_a_state_from_another_browser_is_refused(client: Client, installed_portal: Portal,
                                                 fake_portal: FakePortal, b24_cloud: FakeBitrix24Cloud) -> None:
    victim = Client()
    start_signin(victim, fake_portal.domain)  # the victim's browser holds its own state
    attacker_query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    exchanges = code_exchanges(b24_cloud)

    assert_refused(come_back(victim, attacker_query), 403, "not started in this browser")
    assert code_exchanges(b24_cloud) == exchanges and user_tokens(installed_portal, 6) is None


def test_a_state_older_than_its_lifetime_is_refused(client: Client, installed_portal: Portal,
                                                    fake_portal: FakePortal, monkeypatch: Any) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    later = flow.now() + flow.STATE_MAX_AGE + 1
    monkeypatch.setattr(flow, "now", lambda: later)

    assert_refused(come_back(client, query), 400, "took too long")
    assert user_tokens(installed_portal, 6) is None


def test_an_expired_code_is_refused(client: Client, installed_portal: Portal, fake_portal: FakePortal,
                                    b24_cloud: FakeBitrix24Cloud) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    b24_cloud.advance(31)  # spec §2: the code lives 30 s

    assert_refused(come_back(client, query), 400, "expired or was already used")
    assert user_tokens(installed_portal, 6) is None
    assert b24_cloud.oauth_count("authorization_code", status=400) >= 1


def test_an_unknown_code_is_refused_as_invalid_grant(client: Client, installed_portal: Portal,
                                                     fake_portal: FakePortal) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    query["code"] = "f" * 70

    assert_refused(come_back(client, query), 400, "expired or was already used")
    assert user_tokens(installed_portal, 6) is None


def test_a_user_who_denies_access_is_not_signed_in(client: Client, installed_portal: Portal,
                                                   fake_portal: FakePortal, b24_cloud: FakeBitrix24Cloud) -> None:
    state = start_signin(client, fake_portal.domain)
    exchanges = code_exchanges(b24_cloud)

    query = decide(fake_portal, state, user_id=6, decision="deny")

    assert query["error"] == "access_denied"
    assert_refused(come_back(client, query), 403, "did not allow")
    assert code_exchanges(b24_cloud) == exchanges and user_tokens(installed_portal, 6) is None


def test_a_portal_without_the_app_gets_a_page_that_says_how_to_install_it(
        client: Client, db: Any, b24_cloud: FakeBitrix24Cloud) -> None:
    stranger = b24_cloud.create_portal()

    response = client.post("/signin/", {"portal": stranger.domain})

    assert_refused(response, 404, "not installed")
    assert "install" in response.content.decode() and 'id="install-hint"' in response.content.decode()
    assert flow.STATE_KEY not in client.session


def test_an_uninstalled_portal_gets_the_install_page(client: Client, installed_portal: Portal,
                                                     fake_portal: FakePortal) -> None:
    Portal.objects.filter(pk=installed_portal.pk).update(status=Portal.Status.DELETED)

    assert_refused(client.post("/signin/", {"portal": fake_portal.domain}), 403, "not active")


def test_a_portal_uninstalled_during_sign_in_is_refused_before_the_code_is_exchanged(
        client: Client, installed_portal: Portal, fake_portal: FakePortal, b24_cloud: FakeBitrix24Cloud) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    Portal.objects.filter(pk=installed_portal.pk).update(status=Portal.Status.DELETED)
    exchanges = code_exchanges(b24_cloud)

    assert_refused(come_back(client, query), 403, "not installed")
    assert code_exchanges(b24_cloud) == exchanges and user_tokens(installed_portal, 6) is None


@pytest.mark.parametrize("address", ["evil.example.com", "https://bitrix24.com.evil.example/", "user@x.bitrix24.com"])
def test_an_address_outside_the_allow_list_is_refused(client: Client, db: Any, address: str) -> None:
    response = client.post("/signin/", {"portal": address})

    assert response.status_code in (400, 403)
    assert flow.STATE_KEY not in client.session


@pytest.mark.parametrize("address", ["", " ", "not a host", "x" * 400, "http://[::1"])
def test_a_malformed_address_is_refused(client: Client, db: Any, address: str) -> None:
    assert_refused(client.post("/signin/", {"portal": address}), 400, "Bitrix24 address")


@pytest.mark.parametrize(("field", "value", "status"), [
    ("code", "", 400), ("code", "<script>", 400), ("member_id", "not-a-member", 400),
    ("member_id", "0" * 32, 403), ("domain", "other.bitrix24.com", 403), ("domain", "x" * 300, 400),
])
def test_malformed_or_foreign_callback_parameters_are_refused_before_any_exchange(
        client: Client, installed_portal: Portal, fake_portal: FakePortal, b24_cloud: FakeBitrix24Cloud,
        field: str, value: str, status: int) -> None:
    query = decide(fake_portal, start_signin(client, fake_portal.domain), user_id=6)
    query[field] = value
    exchanges = code_exchanges(b24_cloud)

    response = come_back(client, query)

    assert response.status_code == status, response.content
    assert code_exchanges(b24_cloud) == exchanges and user_tokens(installed_portal, 6) is None


def test_a_callback_without_any_sign_in_started_is_refused(client: Client, db: Any) -> None:
    assert_refused(come_back(client, {"code": "a" * 40, "state": "s" * 40, "domain": "x.bitrix24.com",
                                      "member_id": "a" * 32}), 403, "not started in this browser")


def test_a_webhook_connected_portal_cannot_be_signed_in_to(client: Client, db: Any) -> None:
    from tests.factories import PortalFactory

    PortalFactory(domain="hooks.bitrix24.com", connection=Portal.Connection.WEBHOOK)

    assert_refused(client.post("/signin/", {"portal": "hooks.bitrix24.com"}), 404, "not installed")
