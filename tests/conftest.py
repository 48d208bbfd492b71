"""Shared fixtures: the fake Bitrix24 cloud (real HTTP on 127.0.0.1) wired into settings, and helpers
that drive the real install flow."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.test import Client

from tests.fakes import b24_crm, b24_placements
from tests.fakes.b24_messageservice import install_messageservice
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal
from tests.fakes.clock import Clock


@pytest.fixture(scope="session")
def b24_cloud() -> Iterator[FakeBitrix24Cloud]:
    from django.conf import settings

    cloud = FakeBitrix24Cloud(client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET)
    # Every fake portal speaks every Bitrix24 method the product uses (widgets, CRM, messageservice).
    b24_placements.install(cloud)
    b24_crm.install(cloud)
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


@pytest.fixture(autouse=True)
def _no_counted_calls_from_other_tests() -> Iterator[None]:
    """Routine REST calls are counted per process (oauth.calllog); a test starts with none pending."""
    from oauth import calllog

    with calllog._counts_lock:
        calllog._counts.clear()
    yield


@pytest.fixture
def limiter_clock() -> Iterator[Clock]:
    """A frozen clock for the service's REST rate limiter (`oauth.ratelimit`, both backends): buckets drain
    only on `limiter_clock.advance(...)`, and a wait for a permit (`ratelimit.sleep`) parks on this clock."""
    from oauth import ratelimit

    # Now, on a whole second: every permit slot (k * 0.625 s) is then exact in Redis too (Lua's tostring keeps
    # 14 significant digits), and reset times Bitrix24 reports stay in the future as in real life.
    clock = Clock.manual(float(int(time.time())))
    previous = ratelimit.use_time_source(clock)
    yield clock
    ratelimit.use_time_source(previous)


@pytest.fixture
def fake_portal(b24_cloud: FakeBitrix24Cloud) -> FakePortal:
    return install_messageservice(b24_cloud.create_portal())


def post_install_frame(client: Client, portal: FakePortal, **kwargs: Any):
    query, form = portal.install_frame(**kwargs)
    return client.post(f"/b24/install/?{urlencode(query)}", data=form)


def post_event(client: Client, payload: dict[str, Any], url: str = "/b24/events/"):
    return client.post(url, data=payload)


def install_through_the_frame(client: Client, fake: FakePortal, capture: Any) -> Any:
    """Install `fake` through the real install frame, run its install steps (eager Celery), return its Portal."""
    from tenants.models import Portal

    with capture(execute=True):
        response = post_install_frame(client, fake)
    assert response.status_code == 200, response.content
    fake.finish_install()
    return Portal.objects.get(member_id=fake.member_id)


@pytest.fixture
def installed_portal(db: Any, client: Client, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    """A portal installed through the real install frame, its install steps run (eager Celery)."""
    return install_through_the_frame(client, fake_portal, django_capture_on_commit_callbacks)


@pytest.fixture
def install_portal(db: Any, b24_cloud: FakeBitrix24Cloud,
                   django_capture_on_commit_callbacks: Any) -> Callable[..., tuple[Any, FakePortal]]:
    """A factory: a new fake portal on the same cloud, installed through the real install endpoint.
    Returns (Portal row, FakePortal)."""

    def install(**create: Any) -> tuple[Any, FakePortal]:
        fake = install_messageservice(b24_cloud.create_portal(**create))
        return install_through_the_frame(Client(), fake, django_capture_on_commit_callbacks), fake

    return install


# The owner / member / outsider triad for cross-tenant tests (the healthchecks practice: alice owns the
# project, bob is on the team, charlie is an outsider).

APP_URL = "/b24/app/"
MEMBER_USER_ID = 5


@dataclass(frozen=True)
class Principal:
    """Someone who opened the app frame: their portal (row and fake), Bitrix24 user and frame token."""

    portal: Any  # tenants.models.Portal
    fake_portal: FakePortal
    user_id: int
    is_admin: bool
    token: str


def open_app_as(fake: FakePortal, user_id: int, is_admin: bool) -> str:
    """The frame token the app page hands `user_id` of `fake` (the fake keeps a known user's admin flag)."""
    from tests.placements.conftest import frame_token, post_frame

    if user_id not in fake.users:
        fake.add_user(user_id, is_admin=is_admin)  # before any token is issued for them
    response = post_frame(Client(), APP_URL, fake, user_id=user_id, is_admin=is_admin)
    assert response.status_code == 200, response.content
    return frame_token(response)


@pytest.fixture
def owner(installed_portal: Any, fake_portal: FakePortal) -> Principal:
    """The administrator who installed the portal (user 1), with an admin frame token."""
    return Principal(installed_portal, fake_portal, 1, True, open_app_as(fake_portal, 1, True))


@pytest.fixture
def member(installed_portal: Any, fake_portal: FakePortal) -> Principal:
    """A non-admin user of the owner's portal, with their (non-admin) frame token."""
    return Principal(installed_portal, fake_portal, MEMBER_USER_ID, False,
                     open_app_as(fake_portal, MEMBER_USER_ID, False))


@pytest.fixture
def outsider(install_portal: Callable[..., tuple[Any, FakePortal]]) -> Principal:
    """The administrator of a second portal on the same cloud, installed too, with their own frame token.
    Same user id as the owner on purpose: a user id alone must never cross portals."""
    portal, fake = install_portal()
    return Principal(portal, fake, 1, True, open_app_as(fake, 1, True))
