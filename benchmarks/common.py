"""Shared set-up for benchmarks: Django on the test settings against a throwaway PostgreSQL database."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
