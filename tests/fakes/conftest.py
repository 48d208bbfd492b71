"""Fixtures for the tests of the fakes themselves: plain pytest, no Django, no DB, no Redis.

tests/conftest.py has Django-bound autouse fixtures (settings, Redis, the call-log counts); nothing here
needs them, and this folder also runs with ``-p no:django`` (``.venv/bin/pytest tests/fakes -p no:django
-q``), so they are overridden with no-ops. The cloud runs on a frozen :class:`Clock` (``Clock.manual()``):
time passes only when a test calls ``cloud.advance(...)``. A module that needs more on its cloud or portal
overrides the fixture by the same name and takes this one as its argument.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .bitrix24 import FakeBitrix24Cloud, FakePortal
from .clock import Clock


@pytest.fixture(autouse=True)
def _b24_settings() -> None:
    return None


@pytest.fixture(autouse=True)
def _clean_redis() -> None:
    return None


@pytest.fixture(autouse=True)
def _no_counted_calls_from_other_tests() -> None:
    return None


@pytest.fixture
def cloud() -> Iterator[FakeBitrix24Cloud]:
    with FakeBitrix24Cloud(clock=Clock.manual()) as c:
        yield c
        assert c.server_errors == []


@pytest.fixture
def portal(cloud: FakeBitrix24Cloud) -> FakePortal:
    return cloud.create_portal()


@pytest.fixture
def token(portal: FakePortal) -> str:
    return str(portal.issue_tokens(user_id=1, is_admin=True)["access_token"])
