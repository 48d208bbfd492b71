"""Frame security: what a frame POST must prove, the frame token, and tenant isolation of our API."""

from __future__ import annotations

import hashlib

import pytest
from django.test import Client

from b24portal.redis import get_redis
from oauth.models import PortalToken
from tenants.journal import Actor
from tenants.models import Portal

from .conftest import APP_URL, LIST_MENU_URL, api, frame_token, post_frame

pytestmark = pytest.mark.django_db


def test_it_accepts_a_verified_frame_and_lets_only_that_portal_frame_it(client, installed_portal, fake_portal):
    response = post_frame(client, APP_URL, fake_portal)

    assert response.status_code == 200
    assert response["Content-Security-Policy"] == f"frame-ancestors http://{fake_portal.domain}"
    assert "X-Frame-Options" not in response
    assert frame_token(response)
    # Everything else keeps denying framing, admin included.
    assert client.get("/admin/login/")["X-Frame-Options"] == "DENY"


def test_it_needs_no_csrf_cookie_on_the_entry_points_only(installed_portal, fake_portal):
    strict = Client(enforce_csrf_checks=True)
    assert post_frame(strict, APP_URL, fake_portal).status_code == 200
    assert strict.post("/admin/login/", {"username": "x", "password": "y"}).status_code == 403


@pytest.mark.parametrize(("override", "status", "reason"), [
    ({"DOMAIN": "evil.example.com"}, 403, "not allowed"),
    ({"member_id": "0123456789abcdef0123456789abcdef"}, 403, "unknown portal"),
    ({"APPLICATION_TOKEN": "f" * 32}, 403, "APPLICATION_TOKEN"),
    ({"AUTH_ID": "a" * 64}, 403, "rejected the token"),
    ({"AUTH_ID": None}, 400, "missing AUTH_ID"),
    ({"AUTH_ID": "<script>"}, 400, "AUTH_ID is malformed"),
    ({"member_id": "x"}, 400, "member_id is malformed"),
    ({"PLACEMENT_OPTIONS": "{not json"}, 400, "not JSON"),
    ({"PLACEMENT_OPTIONS": "[1, 2]"}, 400, "not a JSON object"),
    ({"AUTH_EXPIRES": "soon"}, 400, "AUTH_EXPIRES"),
    ({"LANG": "../../etc"}, 400, "LANG is malformed"),
])
def test_it_refuses_forged_or_malformed_frames_and_stores_nothing(client, installed_portal, fake_portal, override,
                                                                  status, reason):
    fake_portal.add_user(7, is_admin=False)
    tokens_before = PortalToken.objects.count()

    response = post_frame(client, LIST_MENU_URL, fake_portal, "CRM_CONTACT_LIST_MENU", {"ID": "1"}, user_id=7,
                          is_admin=False, **override)

    assert response.status_code == status
    assert reason in response.json()["error"]
    assert "Content-Security-Policy" not in response and response["X-Frame-Options"] == "DENY"
    assert PortalToken.objects.count() == tokens_before
    assert not PortalToken.objects.filter(user_id=7).exists()


def test_it_refuses_a_member_id_presented_from_another_allowed_domain(client, owner, outsider):
    # The outsider's portal is installed and allow-listed, but it is not where the owner's member_id lives.
    response = post_frame(client, APP_URL, outsider.fake_portal, member_id=owner.portal.member_id,
                          DOMAIN=outsider.fake_portal.domain)

    assert response.status_code == 403
    assert "another domain" in response.json()["error"]
    assert not PortalToken.objects.filter(portal=owner.portal).exclude(user_id=owner.user_id).exists()


@pytest.mark.parametrize("status", [Portal.Status.BLOCKED, Portal.Status.DELETED, Portal.Status.NEW])
def test_it_refuses_frames_of_portals_that_are_not_active(client, installed_portal, fake_portal, status):
    Portal.objects.filter(pk=installed_portal.pk).update(status=status)

    response = post_frame(client, APP_URL, fake_portal)

    assert response.status_code == 403
    assert "not active" in response.json()["error"]


def test_it_refuses_get_and_non_form_bodies(client, installed_portal, fake_portal):
    assert client.get(APP_URL).status_code == 405
    response = client.post(f"{APP_URL}?DOMAIN={fake_portal.domain}", data="{}", content_type="application/json")
    assert response.status_code == 415


def test_it_proves_a_token_once_and_caches_the_proof_under_a_hash(client, installed_portal, fake_portal):
    from urllib.parse import urlencode

    query, form = fake_portal.install_frame(user_id=1)
    batches = fake_portal.count("batch")
    for _ in range(3):
        assert client.post(f"{APP_URL}?{urlencode(query)}", data=form).status_code == 200

    assert fake_portal.count("batch") == batches + 1
    redis = get_redis()
    keys = [k.decode() for k in redis.keys("*")]
    assert not any(form["AUTH_ID"] in key for key in keys)
    digest = hashlib.sha256(f"{installed_portal.pk}:{installed_portal.member_id}:{form['AUTH_ID']}".encode())
    (key,) = [k for k in keys if digest.hexdigest() in k]
    assert 0 < redis.ttl(key) <= int(form["AUTH_EXPIRES"]) - 60  # bounded by the token's own lifetime


def test_a_short_lived_token_is_cached_only_as_long_as_it_lives(client, installed_portal, fake_portal):
    response = post_frame(client, APP_URL, fake_portal, AUTH_EXPIRES="120")

    assert response.status_code == 200
    ttls = [get_redis().ttl(k) for k in get_redis().keys("*frame-proof*")]
    assert ttls and all(0 < ttl <= 60 for ttl in ttls)


def test_it_keeps_the_users_frame_tokens_and_never_demotes_the_service_token(client, installed_portal,
                                                                            fake_portal):
    fake_portal.add_user(9, is_admin=False)
    assert post_frame(client, APP_URL, fake_portal, user_id=9, is_admin=False).status_code == 200
    assert post_frame(client, APP_URL, fake_portal, user_id=1).status_code == 200

    user_token = PortalToken.objects.get(portal=installed_portal, user_id=9)
    assert not user_token.is_service and user_token.is_admin is False
    assert PortalToken.objects.get(portal=installed_portal, user_id=1).is_service


def test_the_api_wants_a_valid_frame_token(client, installed_portal, fake_portal, settings):
    url = "/b24/placements/api/my-messages/"
    assert api(client, "GET", url, None).status_code == 401
    assert api(client, "GET", url, "forged.token:value").status_code == 401
    token = frame_token(post_frame(client, APP_URL, fake_portal))
    assert api(client, "GET", url, token).status_code == 200
    settings.B24_FRAME_TOKEN_MAX_AGE = -1
    response = api(client, "GET", url, token)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


def test_a_frame_token_stops_working_when_the_portal_is_blocked(client, installed_portal, fake_portal):
    token = frame_token(post_frame(client, APP_URL, fake_portal))
    Portal.objects.filter(pk=installed_portal.pk).update(status=Portal.Status.BLOCKED)

    assert api(client, "GET", "/b24/placements/api/my-messages/", token).status_code == 403


ADMIN_LISTS = ("/b24/placements/api/accounts/", "/b24/placements/api/stats/", "/b24/placements/api/bindings/")


def test_admin_endpoints_refuse_a_non_admin_frame_token(client, owner, member,
                                                        django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        created = api(client, "POST", "/b24/placements/api/accounts/", owner.token,
                      {"carrier": "sandbox", "code": "owners", "name": "Owner's", "credentials": {}})
    assert created.status_code == 201, created.content
    account = f"/b24/placements/api/accounts/{created.json()['id']}/"

    for url in ADMIN_LISTS:
        assert api(client, "GET", url, owner.token).status_code == 200
        assert api(client, "GET", url, member.token).status_code == 403
    # Nor can the member write: create, read, change, deactivate or test the owner's account.
    assert api(client, "POST", "/b24/placements/api/accounts/", member.token,
               {"carrier": "sandbox", "code": "mine", "name": "Mine", "credentials": {}}).status_code == 403
    assert api(client, "GET", account, member.token).status_code == 403
    assert api(client, "PATCH", account, member.token, {"name": "x"}).status_code == 403
    assert api(client, "POST", f"{account}deactivate/", member.token, {}).status_code == 403
    assert api(client, "POST", f"{account}test/", member.token, {"to": "+79991234567"}).status_code == 403
    assert api(client, "GET", account, owner.token).json()["name"] == "Owner's"
    assert api(client, "GET", account, owner.token).json()["is_active"] is True
    # The member's own page still works.
    assert api(client, "GET", "/b24/placements/api/my-messages/", member.token).status_code == 200


def test_a_frame_token_of_one_portal_never_reaches_another_portals_data(client, owner, outsider,
                                                                          django_capture_on_commit_callbacks):
    from messageservice import accounts

    with django_capture_on_commit_callbacks(execute=False):
        foreign = accounts.do_save_account(outsider.portal, data={"carrier": "sandbox", "code": "theirs",
                                                                  "name": "Theirs"}, actor=Actor("staff", "test"))
        own = accounts.do_save_account(owner.portal, data={"carrier": "sandbox", "code": "ours", "name": "Ours"},
                                       actor=Actor("staff", "test"))

    # Both directions: the owner cannot reach the outsider's account, nor the outsider the owner's.
    for token, theirs, mine in ((owner.token, foreign, own), (outsider.token, own, foreign)):
        assert api(client, "GET", f"/b24/placements/api/accounts/{theirs.pk}/", token).status_code == 404
        assert api(client, "PATCH", f"/b24/placements/api/accounts/{theirs.pk}/", token,
                   {"name": "x"}).status_code == 404
        assert api(client, "POST", f"/b24/placements/api/accounts/{theirs.pk}/deactivate/", token,
                   {}).status_code == 404
        assert api(client, "POST", f"/b24/placements/api/accounts/{theirs.pk}/test/", token,
                   {"to": "+79991234567"}).status_code == 404
        listed = api(client, "GET", "/b24/placements/api/accounts/", token).json()["accounts"]
        assert [row["id"] for row in listed] == [mine.pk]
        assert api(client, "GET", f"/b24/placements/api/accounts/{mine.pk}/", token).status_code == 200
    for account, name in ((foreign, "Theirs"), (own, "Ours")):
        account.refresh_from_db()
        assert account.name == name and account.is_active


def test_an_outsiders_token_never_reads_the_owners_messages_or_stats(client, owner, outsider,
                                                                     django_capture_on_commit_callbacks):
    from messageservice import accounts
    from messageservice.models import Message

    # The same Bitrix24 user id (1) on both portals: only the portal may tell them apart.
    for who, body in ((owner, "owner's secret"), (outsider, "outsider's")):
        with django_capture_on_commit_callbacks(execute=False):
            account = accounts.do_save_account(who.portal, data={"carrier": "sandbox", "code": "sms", "name": "S"},
                                               actor=Actor("staff", "test"))
        Message.objects.create(portal=who.portal, account=account, carrier="sandbox",
                               message_id=body[:3].ljust(32, "0"), origin="widget", recipient_raw="+79991234567",
                               body=body, author_user_id=who.user_id, status="delivered")
    assert owner.user_id == outsider.user_id

    def bodies(token):
        return [row["body"] for row in api(client, "GET", "/b24/placements/api/my-messages/", token).json()]

    assert bodies(owner.token) == ["owner's secret"]
    assert bodies(outsider.token) == ["outsider's"]
    assert api(client, "GET", "/b24/placements/api/stats/?days=14", owner.token).json()["total"] == 1
    assert api(client, "GET", "/b24/placements/api/stats/?days=14", outsider.token).json()["total"] == 1


def test_an_outsiders_app_token_changes_no_consent_anywhere(client, owner, outsider):
    from messageservice.consent import consent_for

    response = api(client, "POST", "/b24/placements/api/consent/", outsider.token,
                   {"phone": "+79991234567", "opted_in": False})

    assert response.status_code == 403, response.content  # consent goes with an item-bound token only
    assert consent_for(outsider.portal, ["+79991234567"])["+79991234567"] is None
    assert consent_for(owner.portal, ["+79991234567"])["+79991234567"] is None


def test_pages_follow_the_users_language(client, installed_portal, fake_portal):
    fake_portal.add_user(5, is_admin=False)
    russian = post_frame(client, APP_URL, fake_portal, user_id=5, is_admin=False, lang="ru")
    english = post_frame(client, APP_URL, fake_portal, user_id=5, is_admin=False, lang="en")

    assert "Мои SMS" in russian.content.decode() and russian["Content-Language"] == "ru"
    assert "SMS I sent" in english.content.decode()
