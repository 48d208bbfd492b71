"""Shared set-up for benchmarks: Django on the test settings against a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup_django() -> None:
    """Configure Django with tests.settings (real PostgreSQL and Redis), without creating a database."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()


def _admin_execute(sql: str) -> None:
    """Run CREATE/DROP DATABASE on the server's maintenance database (autocommit)."""
    import psycopg
    from django.db import connections

    params = dict(connections["default"].get_connection_params())
    params["dbname"] = "postgres"
    with psycopg.connect(**params, autocommit=True) as conn:
        conn.execute(sql)


@contextmanager
def scratch_database(prefix: str = "bench") -> Iterator[str]:
    """Create a fresh database, migrate it, point Django at it; drop it afterwards. Child processes get its
    name passed explicitly (BENCH_DATABASE_NAME)."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _admin_execute(f'CREATE DATABASE "{name}"')
    connections.close_all()
    settings.DATABASES["default"]["NAME"] = name
    connections["default"].settings_dict["NAME"] = name
    os.environ["BENCH_DATABASE_NAME"] = name
    try:
        call_command("migrate", verbosity=0)
        yield name
    finally:
        connections.close_all()
        _admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def use_inherited_database() -> None:
    """In a child process: use the database the parent benchmark created."""
    from django.conf import settings
    from django.db import connections

    name = os.environ.get("BENCH_DATABASE_NAME")
    if name:
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = name


# -- the conditions a figure was taken under (issue 15), and clean-up of what benchmarks leave in Redis --
# The benchmarks' Redis database is the tests' (TEST_REDIS_URL): kombu's bindings and bookkeeping, the
# benchmark queues, the limiter and operating-time keys, the REST journal's and the proofs' markers.
# Keys written through Django's cache carry its version prefix (":1:b24:op:…"), hence the leading "*".
REDIS_PATTERNS = ("_kombu.binding.*", "_kombu.binding_permanent.*", "unacked", "unacked_index", "unacked_mutex",
                  "bench-*", "*b24:op:*", "*b24:rl:*", "*b24:rest-journal:*", "*b24:proof-*")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"


def _versions() -> str:
    import platform

    parts = [f"Python {platform.python_version()}"]
    try:
        import psycopg
        from django.db import connections

        params = dict(connections["default"].get_connection_params())
        params["dbname"] = "postgres"
        with psycopg.connect(**params, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            parts.append(f"PostgreSQL {row[0] if row else '?'}")
    except Exception as exc:
        parts.append(f"PostgreSQL unknown ({type(exc).__name__})")
    try:
        from b24portal.redis import get_redis

        parts.append(f"Redis {get_redis().info('server')['redis_version']}")
    except Exception as exc:
        parts.append(f"Redis unknown ({type(exc).__name__})")
    return ", ".join(parts)


def conditions(moment: str) -> str:
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    line = f"conditions {moment}: load average {load}"
    if moment == "before":
        line += f"; CPU {_cpu_model()} × {os.cpu_count()}; {_versions()}"
    return line


def cleanup_redis() -> int:
    """Delete what a benchmark leaves in its Redis database (kombu bindings and queues, limiter and
    operating-time keys, locks). Returns keys deleted."""
    from b24portal.redis import get_redis

    client = get_redis()
    deleted = 0
    for pattern in REDIS_PATTERNS:
        keys = list(client.scan_iter(match=pattern, count=1000))
        for start in range(0, len(keys), 1000):
            deleted += int(client.delete(*keys[start:start + 1000]))
    return deleted


def closed_loop(send: Callable[[Any, str], int], seconds: float, concurrency: int) -> dict[str, Any]:
    """`concurrency` threads, each with its own keep-alive `requests.Session`, call `send(session, unique)`
    back to back for `seconds` (`unique`: 32 hex digits, new on every call; `send` returns the HTTP status). The GIL makes
    this client slower than wrk, so its figures are a lower bound."""
    import requests

    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    nonce = uuid.uuid4().hex[:12]

    def run(tid: int) -> None:
        session = requests.Session()
        own: list[float] = []
        bad = 0
        counter = 0
        while time.monotonic() < stop_at:
            counter += 1
            started = time.perf_counter()
            status = send(session, f"{nonce}{tid:04x}{counter:016x}")  # 32 hex digits, like a message id
            own.append(time.perf_counter() - started)
            bad += status >= 300
        with lock:
            latencies.extend(own)
            errors[0] += bad

    started = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(int(len(latencies) * p / 100), len(latencies) - 1)] * 1000 if latencies else 0.0

    return {"requests": len(latencies), "seconds": elapsed, "rps": len(latencies) / elapsed, "p50_ms": pct(50),
            "p99_ms": pct(99), "mean_ms": sum(latencies) / max(len(latencies), 1) * 1000,
            "max_ms": latencies[-1] * 1000 if latencies else 0.0, "errors": errors[0]}
