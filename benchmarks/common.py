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


@contextmanager
def scratch_database(prefix: str = "bench") -> Iterator[str]:
    """Create a fresh database, migrate it, point Django at it; drop it afterwards. Child processes inherit
    it through BENCH_DATABASE_NAME."""
    from django.conf import settings
    from django.core.management import call_command
    from django.db import connections

    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with connections["default"].cursor() as cursor:
        cursor.execute(f'CREATE DATABASE "{name}"')
    connections["default"].close()
    settings.DATABASES["default"]["NAME"] = name
    os.environ["BENCH_DATABASE_NAME"] = name
    try:
        call_command("migrate", verbosity=0)
        yield name
    finally:
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = _base_name()
        with connections["default"].cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connections["default"].close()


def _base_name() -> str:
    import environ

    return environ.Env.db_url_config(os.environ["DATABASE_URL"])["NAME"]


def use_inherited_database() -> None:
    """In a child process: use the database the parent benchmark created."""
    from django.conf import settings
    from django.db import connections

    name = os.environ.get("BENCH_DATABASE_NAME")
    if name:
        connections.close_all()
        settings.DATABASES["default"]["NAME"] = name
