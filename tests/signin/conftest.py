"""Sign in with Bitrix24: helpers that walk the authorization-code flow through the fake portal's own
/oauth/authorize/ page over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.conf import settings
from django.test import Client

from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal

CALLBACK_PATH = "/signin/callback/"


@pytest.fixture(autouse=True)
def app_card_redirect_uri(b24_cloud: FakeBitrix24Cloud) -> Iterator[str]:
    """The redirect URI set in the app card (what README "Registering the app" tells integrators to set)."""
    uri = settings.PUBLIC_URL + CALLBACK_PATH
    b24_cloud.redirect_uris[settings.B24_CLIENT_ID] = uri
    yield uri
    b24_cloud.redirect_uris.pop(settings.B24_CLIENT_ID, None)


def start_signin(client: Client, address: str) -> str:
    """POST the home page's form; returns the state the authorize URL carries."""
    response = client.post("/signin/", {"portal": address})
    assert response.status_code == 302, response.content
    query = parse_qs(urlsplit(response["Location"]).query)
    assert query["client_id"] == [settings.B24_CLIENT_ID]
    return query["state"][0]


def decide(fake: FakePortal, state: str, *, user_id: int = 1, decision: str = "allow") -> dict[str, str]:
    """The user, logged in to the portal, presses Allow or Deny; returns the query Bitrix24 redirects with."""
    fake.browser_user = user_id
    answer = requests.post(f"{fake.base_url}/oauth/authorize/", allow_redirects=False, timeout=10,
                           data={"client_id": settings.B24_CLIENT_ID, "state": state, "decision": decision})
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["Location"])
    assert location.path == CALLBACK_PATH
    return {key: values[-1] for key, values in parse_qs(location.query).items()}


def come_back(client: Client, query: dict[str, str]) -> Any:
    return client.get(CALLBACK_PATH, query)
