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
