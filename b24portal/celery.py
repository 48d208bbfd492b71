"""The Celery application. Tasks live in each app's tasks.py; periodic work is registered with
`add_periodic` from each AppConfig.ready() so the schedule is declared next to the code it runs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "b24portal.settings")

app = Celery("b24portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Delivery-status tasks (poll, push) live in messageservice/delivery.py.
app.autodiscover_tasks(related_name="delivery")


def close_unusable_connections(sender: Any = None, **_: Any) -> None:
    """Around each task in a worker, what Django does around each request: close a database connection that
    is broken or older than CONN_MAX_AGE, keep the others (settings.CELERY_DB_REUSE_MAX). Not for an eager
    task: it runs inside its caller's connection and transaction."""
    if not getattr(getattr(sender, "request", None), "is_eager", False):
        close_old_connections()


task_prerun.connect(close_unusable_connections, weak=False, dispatch_uid="b24portal.celery.close_connections_pre")
task_postrun.connect(close_unusable_connections, weak=False, dispatch_uid="b24portal.celery.close_connections_post")


@dataclass(frozen=True)
class Periodic:
    """What a beat entry does, in a sentence for staff, and whether staff may pause it in admin (its schedule
    is set by the code and settings: beat writes it back on every start, so it is read-only in admin)."""

    name: str
    task: str
    description: str
    staff_may_pause: bool = False


#: every entry registered through add_periodic, by name (the admin of periodic tasks reads it)
PERIODIC: dict[str, Periodic] = {}


def add_periodic(name: str, task: str, seconds: float, *, description: str, staff_may_pause: bool = False,
                 **options: object) -> None:
    """Register a beat entry (django-celery-beat syncs it, description included, into its tables on start)."""
    from django.conf import settings

    PERIODIC[name] = Periodic(name, task, description, staff_may_pause)
    settings.CELERY_BEAT_SCHEDULE[name] = {"task": task, "schedule": seconds, "options": options,
                                           "description": description}
