"""Fixtures for the SMS app: the fake messageservice methods on the fake portal, fake carriers over HTTP,
and a portal with an active provider account registered as a Bitrix24 sender."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from messageservice import accounts
from messageservice.models import ProviderAccount
from tenants.journal import Actor
from tenants.models import Portal
from tests.fakes.b24_messageservice import install_messageservice
from tests.fakes.bitrix24 import FakePortal
from tests.fakes.carriers import FakeSmsc, FakeSmsRu, FakeTwilio

SENDER_CODE = "b24portal_sms"


@pytest.fixture
def fake_smsru() -> Iterator[FakeSmsRu]:
    with FakeSmsRu() as carrier:
        yield carrier


@pytest.fixture
def fake_smsc() -> Iterator[FakeSmsc]:
    with FakeSmsc() as carrier:
        yield carrier


@pytest.fixture
def fake_twilio() -> Iterator[FakeTwilio]:
    with FakeTwilio() as carrier:
        yield carrier


@pytest.fixture
def ms_fake_portal(fake_portal: FakePortal) -> FakePortal:
    """The fake portal with Bitrix24's messageservice methods (registered before the install runs)."""
    return install_messageservice(fake_portal)


def create_account(portal: Any, capture: Any, *, code: str = SENDER_CODE, carrier: str = "smsru",
                   credentials: dict[str, str] | None = None, base_url: str = "", **data: Any) -> ProviderAccount:
    """An account through the real service, its sender.add run (on-commit Celery, eager)."""
    with capture(execute=True):
        account = accounts.do_save_account(portal, data={
            "carrier": carrier, "code": code, "name": data.pop("name", "B24 Portal SMS"),
            "credentials": credentials or {}, "base_url": base_url, **data}, actor=Actor("staff", "tester"))
    account.refresh_from_db()
    return account


@pytest.fixture
def b24_portal(db: Any, ms_fake_portal: FakePortal) -> Portal:
    """An active Portal for the fake portal, with its admin's tokens stored as the service token.

    Built directly rather than through the install frame, so these tests do not depend on other apps'
    install steps; the SMS install step itself is exercised through the step registry."""
    from oauth.tokens import TokenGrant, store_tokens
    from tenants.models import hash_application_token
    from tests.factories import PortalFactory

    portal = PortalFactory(member_id=ms_fake_portal.member_id, domain=ms_fake_portal.domain,
                           rest_endpoint=ms_fake_portal.client_endpoint, phone_region="RU", license="ru_pro",
                           application_token_hash=hash_application_token(ms_fake_portal.application_token))
    tokens = ms_fake_portal.issue_tokens(user_id=1, is_admin=True)
    store_tokens(portal, TokenGrant(access_token=tokens["access_token"], refresh_token=tokens["refresh_token"],
                                    expires_in=int(tokens["expires_in"]), scope=",".join(ms_fake_portal.scopes)),
                 user_id=1, is_service=True, is_admin=True)
    return portal


@pytest.fixture
def sms_account(b24_portal: Portal, fake_smsru: FakeSmsRu,
                django_capture_on_commit_callbacks: Any) -> ProviderAccount:
    """An active SMS.ru account (pointing at the fake SMS.ru) registered as sender SENDER_CODE."""
    account = create_account(b24_portal, django_capture_on_commit_callbacks,
                             credentials=fake_smsru.credentials, base_url=fake_smsru.base_url)
    assert account.registration_state == ProviderAccount.Registration.REGISTERED
    return account


@pytest.fixture
def sms_portal(sms_account: ProviderAccount) -> Portal:
    """An installed, active portal whose Bitrix24 has our sender SENDER_CODE (fake SMS.ru behind it)."""
    return sms_account.portal
