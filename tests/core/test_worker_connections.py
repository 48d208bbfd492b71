"""Celery workers keep their database connection between tasks (Celery's Django fix-up would close it
around every task whatever CONN_MAX_AGE says) and still drop one that is broken or too old."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from celery.fixups.django import DjangoWorkerFixup
from django.db import connection

from b24portal import settings as production_settings
from b24portal.celery import app, close_unusable_connections

pytestmark = pytest.mark.django_db(transaction=True)  # autocommit, as in a worker between tasks

WORKER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))
EAGER_TASK = SimpleNamespace(request=SimpleNamespace(is_eager=True))


def run_task_signals(fixup: DjangoWorkerFixup) -> None:
    """What a worker runs around a task: Celery's fix-up and b24portal's handler, before and after."""
    fixup.on_task_prerun(WORKER_TASK)
    close_unusable_connections(WORKER_TASK)
    fixup.on_task_postrun(WORKER_TASK)
    close_unusable_connections(WORKER_TASK)


@pytest.fixture
def production_reuse() -> Iterator[None]:
    """The production setting (tests.settings turns reuse off for the tests' thread-pool workers)."""
    previous = app.conf.get("CELERY_DB_REUSE_MAX")
    app.conf.CELERY_DB_REUSE_MAX = production_settings.CELERY_DB_REUSE_MAX
    try:
        yield
    finally:
        app.conf.CELERY_DB_REUSE_MAX = previous


def test_a_worker_reuses_its_database_connection_from_task_to_task(production_reuse):
    assert production_settings.CELERY_DB_REUSE_MAX
    connection.settings_dict["CONN_MAX_AGE"] = 60
    connection.close()
    connection.ensure_connection()
    raw = connection.connection
    fixup = DjangoWorkerFixup(app)
    for _ in range(3):
        run_task_signals(fixup)
        connection.ensure_connection()
        assert connection.connection is raw
    connection.close()


def test_a_worker_closes_a_connection_older_than_conn_max_age():
    connection.ensure_connection()
    connection.close_at = time.monotonic() - 1  # CONN_MAX_AGE has passed
    close_unusable_connections(WORKER_TASK)
    assert connection.connection is None


def test_an_eager_task_leaves_its_callers_connection_alone():
    connection.ensure_connection()
    raw = connection.connection
    connection.close_at = time.monotonic() - 1
    close_unusable_connections(EAGER_TASK)
    assert connection.connection is raw
