from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox import engine


@pytest.fixture
def sandbox_on(settings: Any) -> Iterator[engine.Sandbox]:
    """The sandbox switched on for the Django test client (host "testserver"), fresh for the test."""
    settings.SANDBOX_ENABLED = True
    settings.PUBLIC_URL = "http://testserver"
    settings.SANDBOX_DOMAIN = "testserver"
    current = engine.reset()
    yield current
    current.close()
    engine._current = None
