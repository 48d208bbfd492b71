"""The one outbound HTTP session of this process: pooled, with timeouts and a User-Agent.

Every call to Bitrix24 or a carrier goes through `get_session()`. Retries are never automatic here:
callers decide, because a retried POST can send an SMS twice.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from b24portal import __version__

USER_AGENT = f"b24portal/{__version__} (+https://github.com/b24portal)"
DEFAULT_TIMEOUT: tuple[float, float] = (5.0, 60.0)

_local = threading.local()
_pid: int | None = None


class TimeoutSession(requests.Session):
    """A session whose requests always carry a timeout."""

    def __init__(self, timeout: tuple[float, float] = DEFAULT_TIMEOUT) -> None:
        super().__init__()
        self.default_timeout = timeout
        self.headers["User-Agent"] = USER_AGENT
        self.headers["Accept"] = "application/json"
        adapter = HTTPAdapter(pool_connections=20, pool_maxsize=50, max_retries=0)
        self.mount("https://", adapter)
        self.mount("http://", adapter)
        self.trust_env = False  # proxies or netrc from the environment must not see our tokens

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.default_timeout)
        return super().request(method, url, *args, **kwargs)


def get_session() -> TimeoutSession:
    """The process's pooled session (one per thread: requests.Session is not thread-safe to mutate;
    a forked worker gets a fresh one instead of sharing the parent's sockets)."""
    global _pid
    if _pid != os.getpid():
        _pid = os.getpid()
        _local.__dict__.clear()
    session = getattr(_local, "session", None)
    if session is None:
        session = _local.session = TimeoutSession()
    return session
