"""Shared fixtures: the fake Bitrix24 cloud (real HTTP on 127.0.0.1) wired into settings, and helpers
that drive the real install flow."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from tests.fakes import b24_placements
from tests.fakes.b24_messageservice import install_messageservice
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal


@pytest.fixture(scope="session")
def b24_cloud() -> Iterator[FakeBitrix24Cloud]:
    from django.conf import settings

    cloud = FakeBitrix24Cloud(client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET)
    # Every fake portal speaks every Bitrix24 method the product uses (widgets, CRM, messageservice).
    b24_placements.install(cloud)
    yield cloud
    cloud.close()


@pytest.fixture(autouse=True)
def _b24_settings(settings: Any, b24_cloud: FakeBitrix24Cloud) -> None:
    settings.B24_OAUTH_URL = b24_cloud.oauth_url
    settings.B24_SERVER_ENDPOINT = b24_cloud.server_endpoint


@pytest.fixture(autouse=True)
def _clean_redis() -> Iterator[None]:
    from b24portal.redis import get_redis

    get_redis().flushdb()
    yield


@pytest.fixture
def fake_portal(b24_cloud: FakeBitrix24Cloud) -> FakePortal:
    return install_messageservice(b24_cloud.create_portal())


def post_install_frame(client: Client, portal: FakePortal, **kwargs: Any):
    query, form = portal.install_frame(**kwargs)
    return client.post(f"/b24/install/?{urlencode(query)}", data=form)


def post_event(client: Client, payload: dict[str, Any], url: str = "/b24/events/"):
    return client.post(url, data=payload)


@pytest.fixture
def installed_portal(db: Any, client: Client, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    """A portal installed through the real install frame, its install steps run (eager Celery)."""
    from tenants.models import Portal

    with django_capture_on_commit_callbacks(execute=True):
        response = post_install_frame(client, fake_portal)
    assert response.status_code == 200, response.content
    fake_portal.finish_install()
    return Portal.objects.get(member_id=fake_portal.member_id)
