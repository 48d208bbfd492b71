"""Fixtures for the widgets: the fake placement/CRM methods on the cloud, the fake messageservice methods on
the portal (its install step needs them), and helpers that POST frames the way Bitrix24 does."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from tenants.journal import Actor
from tests.fakes import b24_placements
from tests.fakes.b24_messageservice import install_messageservice
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal

LIST_MENU_URL = "/b24/placements/crm-list-menu/"
CONSENT_URL = "/b24/placements/userfield/consent/"
APP_URL = "/b24/app/"


@pytest.fixture(autouse=True)
def _placement_fakes(b24_cloud: FakeBitrix24Cloud, fake_portal: FakePortal) -> None:
    b24_placements.install(b24_cloud)
    install_messageservice(fake_portal)


def frame_request(fake_portal: FakePortal, placement: str = "DEFAULT", options: dict[str, Any] | None = None, *,
                  user_id: int = 1, is_admin: bool = True, lang: str | None = None,
                  **overrides: str | None) -> tuple[dict[str, str], dict[str, str]]:
    """The (query, form) Bitrix24 would POST; `overrides` replace (or, with None, drop) form fields."""
    if placement == "DEFAULT" and options is None:
        query, form = fake_portal.install_frame(user_id=user_id, is_admin=is_admin)
    else:
        query, form = fake_portal.placement_frame(placement, options or {}, user_id=user_id, is_admin=is_admin)
    if lang:
        query["LANG"] = lang
    for key, value in overrides.items():
        target = query if key in ("DOMAIN", "LANG", "PROTOCOL", "APP_SID") else form
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return query, form


def post_frame(client: Client, url: str, fake_portal: FakePortal, placement: str = "DEFAULT",
               options: dict[str, Any] | None = None, **kwargs: Any):
    query, form = frame_request(fake_portal, placement, options, **kwargs)
    return client.post(f"{url}?{urlencode(query)}", data=form)


def frame_token(response: Any) -> str:
    import json
    import re

    match = re.search(rb'<script id="b24p-config" type="application/json">(.*?)</script>', response.content)
    assert match, "the page carries no frame config"
    return json.loads(match.group(1))["token"]


def api(client: Client, method: str, url: str, token: str | None, data: Any = None):
    headers = {"HTTP_AUTHORIZATION": f"Frame {token}"} if token else {}
    call = getattr(client, method.lower())
    if data is None:
        return call(url, **headers)
    return call(url, data=data, content_type="application/json", **headers)


@pytest.fixture
def contact(fake_portal: FakePortal) -> int:
    return b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Ivan", "LAST_NAME": "Petrov"},
                                       phones=["+79991234567", "+79997654321"])


@pytest.fixture
def fake_smsru():
    from tests.fakes.carriers import FakeSmsRu

    with FakeSmsRu() as carrier:
        yield carrier


@pytest.fixture
def sms_account(installed_portal: Any, fake_smsru: Any, django_capture_on_commit_callbacks: Any):
    """An active SMS.ru account of the installed portal, pointing at the fake SMS.ru (sender registered)."""
    from messageservice import accounts

    with django_capture_on_commit_callbacks(execute=True):
        account = accounts.do_save_account(installed_portal, data={
            "carrier": "smsru", "code": "b24portal_sms", "name": "Main SMS", "credentials": fake_smsru.credentials,
            "base_url": fake_smsru.base_url}, actor=Actor("staff", "tester"))
    account.refresh_from_db()
    return account
