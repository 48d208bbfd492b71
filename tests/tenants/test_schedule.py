"""Periodic work costs what is due (issue 11): due-time selection, spread, chunking, triggers."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from celery.signals import task_prerun
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oauth.tasks import refresh_all_capabilities
from tenants import schedule
from tenants.models import Portal, PortalCheck
from tests.conftest import post_event
from tests.factories import PortalFactory

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


@pytest.fixture
def started_tasks():
    names: list[str] = []

    def count(sender=None, **_):
        names.append(sender.name)

    task_prerun.connect(count, weak=False)
    yield names
    task_prerun.disconnect(count)


def test_first_due_times_are_spread_evenly_over_the_interval():
    now = timezone.now()
    portals = PortalFactory.create_batch(240)
    schedule.ensure_scheduled([p.pk for p in portals], ["bindings"], DAY, now=now)

    per_hour = Counter(int((row.due_at - now) / timedelta(hours=1)) for row in PortalCheck.objects.all())

    assert set(per_hour) <= set(range(24))
    assert max(per_hour.values()) <= 25  # 10 an hour on average; no hour takes a big share


def test_claim_takes_only_due_rows_up_to_the_limit_and_keeps_each_portals_rhythm():
    now = timezone.now()
    due = PortalFactory.create_batch(5)
    later = PortalFactory()
    for index, portal in enumerate(due):
        PortalCheck.objects.create(portal=portal, kind="senders", due_at=now - timedelta(minutes=index + 1))
    PortalCheck.objects.create(portal=later, kind="senders", due_at=now + timedelta(hours=3))

    first = schedule.claim_due("senders", interval=DAY, limit=3, now=now)
    second = schedule.claim_due("senders", interval=DAY, limit=3, now=now)
    third = schedule.claim_due("senders", interval=DAY, limit=3, now=now)

    assert first == [due[4].pk, due[3].pk, due[2].pk]  # the longest overdue first
    assert second == [due[1].pk, due[0].pk]
    assert third == []
    row = PortalCheck.objects.get(portal=due[0], kind="senders")
    assert row.due_at == now - timedelta(minutes=1) + DAY


def test_a_long_outage_does_not_bunch_portals_up():
    now = timezone.now()
    portal = PortalFactory()
    PortalCheck.objects.create(portal=portal, kind="senders", due_at=now - timedelta(days=3, hours=2))

    schedule.claim_due("senders", interval=DAY, limit=10, now=now)

    assert PortalCheck.objects.get(portal=portal).due_at == now - timedelta(hours=2) + DAY


def test_rows_of_inactive_portals_move_on_without_being_claimed():
    now = timezone.now()
    blocked = PortalFactory(status=Portal.Status.BLOCKED)
    PortalCheck.objects.create(portal=blocked, kind="senders", due_at=now - timedelta(minutes=1))

    assert schedule.claim_due("senders", interval=DAY, limit=10, now=now) == []
    assert PortalCheck.objects.get(portal=blocked).due_at > now


def test_a_tick_with_nothing_due_starts_no_task_and_makes_one_query_per_kind(started_tasks):
    portals = PortalFactory.create_batch(50)
    schedule.ensure_scheduled([p.pk for p in portals], ["capabilities"], DAY, now=timezone.now() + timedelta(hours=1))

    with CaptureQueriesContext(connection) as queries:
        claimed = refresh_all_capabilities()

    assert claimed == 0
    assert started_tasks == []
    assert len([q for q in queries.captured_queries if "tenants_portalcheck" in q["sql"]]) == 1


def test_due_portals_are_checked_many_per_task(settings, started_tasks, b24_cloud):
    settings.B24_DUE_CHECKS_PER_TASK = 4
    portals = [PortalFactory(domain=f"p{i}.bitrix24.com") for i in range(10)]
    schedule.ensure_scheduled([p.pk for p in portals], ["capabilities"], DAY, now=timezone.now() - DAY)

    claimed = refresh_all_capabilities()

    assert claimed == 10
    assert Counter(started_tasks)["oauth.tasks.check_capabilities_chunk"] == 3  # 4 + 4 + 2
    assert "oauth.tasks.check_capabilities" not in started_tasks
    assert all(row.due_at > timezone.now() for row in PortalCheck.objects.all())


def test_an_installed_portal_gets_its_checks_and_an_update_makes_them_due(client, installed_portal, fake_portal):
    kinds = set(PortalCheck.objects.filter(portal=installed_portal).values_list("kind", flat=True))
    assert kinds == set(schedule.registered_kinds()) >= {"senders", "bindings", "capabilities"}
    PortalCheck.objects.filter(portal=installed_portal).update(due_at=timezone.now() + timedelta(hours=5))

    assert post_event(client, fake_portal.onappupdate()).status_code == 200

    assert all(row.due_at <= timezone.now() for row in PortalCheck.objects.filter(portal=installed_portal))


def test_a_rate_limited_portal_is_due_again_after_retry_after_while_the_others_are_checked(
        installed_portal, fake_portal, b24_cloud):
    from oauth.tasks import check_capabilities_chunk

    other = PortalFactory(domain="x.bitrix24.com")
    fake_portal.fail_next("batch", "QUERY_LIMIT_EXCEEDED", "Too many requests", 503, times=10)
    before = timezone.now()

    outcome = check_capabilities_chunk.delay([installed_portal.pk, other.pk]).get()

    assert outcome.get("retry later") == 1
    row = PortalCheck.objects.get(portal=installed_portal, kind="capabilities")
    assert before + timedelta(seconds=1) <= row.due_at <= timezone.now() + timedelta(minutes=10)


def test_the_staff_action_makes_the_checks_of_the_chosen_active_portals_due_and_leaves_the_rest(admin_client):
    chosen, other = PortalFactory(domain="chosen.bitrix24.com"), PortalFactory(domain="other.bitrix24.com")
    blocked = PortalFactory(domain="blocked.bitrix24.com", status=Portal.Status.BLOCKED)
    later = timezone.now() + timedelta(hours=5)
    for portal in (chosen, other, blocked):
        schedule.ensure_scheduled([portal.pk], list(schedule.registered_kinds()), DAY, now=later - DAY)
    PortalCheck.objects.update(due_at=later)

    response = admin_client.post("/admin/tenants/portal/", {
        "action": "run_checks_now", "_selected_action": [chosen.pk, blocked.pk]})

    assert response.status_code == 302
    now = timezone.now()
    assert {row.kind for row in PortalCheck.objects.filter(portal=chosen, due_at__lte=now)} >= {
        "senders", "bindings", "capabilities"}
    assert not PortalCheck.objects.filter(portal__in=[other, blocked], due_at__lte=now).exists()
