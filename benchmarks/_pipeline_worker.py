"""The Celery app a status-pipeline benchmark worker runs (`celery -A benchmarks._pipeline_worker worker`):
b24portal's own app and tasks on tests.settings against the benchmark's scratch database, not eager, every
task routed to the benchmark's queue, talking to the benchmark's fake Bitrix24 cloud."""

from __future__ import annotations

import os

from benchmarks.common import setup_django, use_inherited_database

setup_django()
use_inherited_database()

from django.conf import settings  # noqa: E402

from b24portal import settings as production_settings  # noqa: E402
from b24portal.celery import app  # noqa: E402

settings.CELERY_TASK_ALWAYS_EAGER = False
app.conf.task_always_eager = False
app.conf.task_default_queue = os.environ["BENCH_CELERY_QUEUE"]
app.conf.task_routes = None
# Like the Procfile's worker, not like the tests' thread workers (tests.settings turns connection reuse off).
app.conf.CELERY_DB_REUSE_MAX = production_settings.CELERY_DB_REUSE_MAX
settings.B24_OAUTH_URL = os.environ["BENCH_B24_OAUTH_URL"]
settings.B24_SERVER_ENDPOINT = os.environ["BENCH_B24_SERVER_ENDPOINT"]
settings.SMS_FIRST_POLL_SECONDS = int(os.environ.get("BENCH_FIRST_POLL_SECONDS", "0"))

__all__ = ["app"]
