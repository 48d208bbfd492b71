"""The Celery application. Tasks live in each app's tasks.py; periodic work is registered with
`add_periodic` from each AppConfig.ready() so the schedule is declared next to the code it runs."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "b24portal.settings")

app = Celery("b24portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# Delivery-status tasks (poll, push) live in messageservice/delivery.py.
app.autodiscover_tasks(related_name="delivery")


def add_periodic(name: str, task: str, seconds: float, **options: object) -> None:
    """Register a beat entry (django-celery-beat syncs it into its tables on start)."""
    from django.conf import settings

    settings.CELERY_BEAT_SCHEDULE[name] = {"task": task, "schedule": seconds, "options": options}
