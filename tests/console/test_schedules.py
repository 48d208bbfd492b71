"""Periodic tasks in admin: each says what it does; the ones that must keep running are read-only, the
others can only be paused (their schedule comes from the code and settings)."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings
from django_celery_beat.models import PeriodicTask
from django_celery_beat.schedulers import ModelEntry

from b24portal.celery import PERIODIC
from b24portal.celery import app as celery_app

pytestmark = pytest.mark.django_db

URL = "/admin/django_celery_beat/periodictask/"


@pytest.fixture
def synced() -> dict[str, PeriodicTask]:
    """The beat entries written into django-celery-beat's tables as beat does on start."""
    for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
        ModelEntry.from_entry(name, app=celery_app, **entry)
    return {t.name: t for t in PeriodicTask.objects.all()}


def test_every_periodic_task_has_a_sentence() -> None:
    assert set(PERIODIC) == set(settings.CELERY_BEAT_SCHEDULE)
    for name, periodic in PERIODIC.items():
        assert periodic.description.endswith(".") and len(periodic.description) > 30, name
    assert not PERIODIC["messageservice-push-statuses"].staff_may_pause
    assert PERIODIC["messageservice-reconcile-senders"].staff_may_pause


def test_the_list_shows_what_each_does(staff_client: Any, synced: dict[str, PeriodicTask]) -> None:
    assert synced["messageservice-push-statuses"].description == PERIODIC["messageservice-push-statuses"].description
    page = staff_client.get(URL).content.decode()
    for periodic in PERIODIC.values():
        assert periodic.description.replace("'", "&#x27;") in page


def test_a_task_that_must_keep_running_is_read_only(staff_client: Any, synced: dict[str, PeriodicTask]) -> None:
    task = synced["messageservice-push-statuses"]
    page = staff_client.get(f"{URL}{task.pk}/change/").content.decode()
    assert 'name="enabled"' not in page and 'name="interval"' not in page
    staff_client.post(URL, {"action": "disable_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert task.enabled
    assert staff_client.post(f"{URL}{task.pk}/delete/", {"post": "yes"}).status_code == 403


def test_a_tunable_task_can_only_be_paused(staff_client: Any, synced: dict[str, PeriodicTask]) -> None:
    task = synced["messageservice-reconcile-senders"]
    page = staff_client.get(f"{URL}{task.pk}/change/").content.decode()
    assert 'name="enabled"' in page and 'name="interval"' not in page
    staff_client.post(URL, {"action": "disable_tasks", "_selected_action": [task.pk]})
    task.refresh_from_db()
    assert not task.enabled
