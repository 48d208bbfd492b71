"""Tokens: refresh on expiry and on 401 expired_token, rotation, refusals, OAuth faults."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from oauth.client import PortalClient
from oauth.errors import B24BadResponse, B24PaymentRequired, B24TokensRevoked, B24TransportError
from oauth.models import PortalToken
from tenants.models import Portal

pytestmark = pytest.mark.django_db


def service_token(portal: Portal) -> PortalToken:
    return PortalToken.objects.get(portal=portal, is_service=True)


def test_an_expired_token_is_refreshed_before_the_call(installed_portal, b24_cloud):
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now() - timedelta(seconds=1))
    before = service_token(installed_portal)
    calls = b24_cloud.oauth_calls

    PortalClient(installed_portal).call("app.info")

    after = service_token(installed_portal)
    assert b24_cloud.oauth_calls == calls + 1
    assert after.access_token != before.access_token and after.refresh_token != before.refresh_token
    assert after.refresh_count == 1 and after.expires_at > timezone.now()


def test_a_401_expired_token_refreshes_once_and_repeats_the_call(installed_portal, fake_portal, b24_cloud):
    fake_portal.expire_access_tokens()  # our row still thinks it is valid
    calls = b24_cloud.oauth_calls

    info = PortalClient(installed_portal).call("app.info")

    assert info["ID"] == fake_portal.app_id
    assert b24_cloud.oauth_calls == calls + 1
    assert fake_portal.count("app.info", status=401) == 1


def test_the_rotated_refresh_token_is_kept(installed_portal, fake_portal):
    fake_portal.expire_access_tokens()
    PortalClient(installed_portal).call("app.info")
    fake_portal.expire_access_tokens()
    PortalClient(installed_portal).call("app.info")  # would be invalid_grant had the old pair been kept
    assert service_token(installed_portal).refresh_count == 2


def test_invalid_grant_marks_the_portal_for_reinstall(installed_portal, fake_portal):
    fake_portal.revoke_tokens()
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now())
    calls_before = len(fake_portal.requests)

    with pytest.raises(B24TokensRevoked):
        PortalClient(installed_portal).call("app.info")

    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.NEEDS_REINSTALL
    assert "invalid_grant" in installed_portal.last_problem
    assert len(fake_portal.requests) == calls_before  # no retry loop against the portal
    assert service_token(installed_portal).last_refresh_error.startswith("invalid_grant")


def test_payment_required_blocks_the_portal(installed_portal, fake_portal):
    fake_portal.payment_required = True
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now())

    with pytest.raises(B24PaymentRequired):
        PortalClient(installed_portal).call("app.info")

    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.BLOCKED
    assert installed_portal.blocked_reason.startswith("payment required")


def test_an_oauth_server_that_is_down_loses_no_token(installed_portal, b24_cloud):
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now())
    before = service_token(installed_portal)
    b24_cloud.oauth_down = True
    try:
        with pytest.raises((B24BadResponse, B24TransportError)) as caught:
            PortalClient(installed_portal).call("app.info")
    finally:
        b24_cloud.oauth_down = False
    assert caught.value.retryable
    after = service_token(installed_portal)
    assert (after.access_token, after.refresh_token) == (before.access_token, before.refresh_token)
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.ACTIVE

    PortalClient(installed_portal).call("app.info")  # back up: the kept pair still refreshes
    assert service_token(installed_portal).refresh_count == 1


def test_a_refresh_answer_for_another_member_id_is_refused(installed_portal, b24_cloud, monkeypatch):
    import oauth.tokens

    real = oauth.tokens.request_oauth

    def other_portal(params):
        return {**real(params), "member_id": "f" * 32}

    monkeypatch.setattr(oauth.tokens, "request_oauth", other_portal)
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now())
    before = service_token(installed_portal)
    with pytest.raises(B24BadResponse):
        PortalClient(installed_portal).call("app.info")
    assert service_token(installed_portal).access_token == before.access_token


def test_the_refresh_answer_client_endpoint_and_scope_are_kept(installed_portal, fake_portal):
    fake_portal.scopes = ["crm", "placement", "messageservice", "user", "im"]
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now())
    PortalClient(installed_portal).call("app.info")
    assert "im" in service_token(installed_portal).scopes


def test_reencrypt_secrets_rewrites_every_token_with_the_first_key(installed_portal, settings):
    from cryptography.fernet import Fernet

    before = service_token(installed_portal)
    settings.FIELD_ENCRYPTION_KEY = [Fernet.generate_key().decode(), *settings.FIELD_ENCRYPTION_KEY]
    call_command("reencrypt_secrets", verbosity=0)

    settings.FIELD_ENCRYPTION_KEY = settings.FIELD_ENCRYPTION_KEY[:1]  # old keys retired
    after = service_token(installed_portal)
    assert (after.access_token, after.refresh_token) == (before.access_token, before.refresh_token)


def test_a_database_dump_holds_no_token_in_clear(installed_portal):
    token = service_token(installed_portal)
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM oauth_portaltoken")
        dump = repr(cursor.fetchall())
    assert token.access_token not in dump and token.refresh_token not in dump
