"""Admin home is the dashboard: attention queues with counts and links to the filtered lists, charts and top
portals; on an empty database; in a bounded number of queries however many rows there are."""

from __future__ import annotations

import html
import re
from datetime import date, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.dashboard import dispatch_stale_seconds
from messageservice.models import Message, ProviderAccount
from oauth.models import RestCallDaily
from placements.models import Binding
from tenants.models import InstallRun, Portal
from tests.factories import PortalFactory

from .conftest import make_account, make_messages

pytestmark = pytest.mark.django_db


def queues(page: str) -> dict[str, tuple[str, str]]:
    """label -> (count, href) of each attention queue on the page."""
    found = {}
    for href, n, label in re.findall(
            r'<a class="console-queue[^"]*" href="([^"]*)" data-queue="[^"]*">\s*<span class="n">([^<]*)</span>([^<]*)',
            page):
        found[html.unescape(label).strip()] = (n.replace("≥ ", "").strip(), html.unescape(href))
    return found


def seed(portals: int = 3, per_portal: int = 5) -> list[Portal]:
    made = []
    for i in range(portals):
        portal = PortalFactory()
        account = make_account(portal, carrier="smsru" if i % 2 else "sandbox")
        make_messages(account, per_portal)
        make_messages(account, 1, state=Message.State.NEEDS_REVIEW, status=None)
        make_messages(account, 2, state=Message.State.FAILED, status=None, last_error="[2] bad api_id")
        make_messages(account, 1, state=Message.State.FAILED, status=None, last_error="old", age=timedelta(days=3))
        Binding.objects.create(portal=portal, kind=Binding.Kind.PLACEMENT, code=f"W{i}",
                               state=Binding.State.MISSING if i == 0 else Binding.State.BOUND)
        RestCallDaily.objects.create(portal=portal, day=timezone.now().date(), method="crm.item.list",
                                     error_code="QUERY_LIMIT_EXCEEDED" if i == 0 else "", calls=40)
        made.append(portal)
    PortalFactory(status=Portal.Status.NEEDS_REINSTALL)
    PortalFactory(status=Portal.Status.BLOCKED)
    PortalFactory(status=Portal.Status.BLOCKED)
    InstallRun.objects.create(portal=made[0], trigger=InstallRun.Trigger.FRAME, status=InstallRun.Status.FAILED)
    run = InstallRun.objects.create(portal=made[-1], trigger=InstallRun.Trigger.FRAME)
    InstallRun.objects.filter(pk=run.pk).update(progress_at=timezone.now() - timedelta(hours=2))
    make_account(made[-1], code="gone", registration_state=ProviderAccount.Registration.REMOVED)
    return made


def test_the_empty_dashboard_shows_every_queue_at_zero(staff_client: Any) -> None:
    response = staff_client.get("/admin/")
    assert response.status_code == 200
    page = response.content.decode()
    found = queues(page)
    for label in ("Messages that need review", "Portals that need a reinstall", "Blocked portals",
                  "Install runs failed (7 days)", "Install runs stuck (pending)", "Widget bindings missing or failing",
                  "Senders missing in Bitrix24"):
        assert found[label][0] == "0", label
    assert "Records jobs: not enabled" in page
    assert "No messages in the last 14 days." in page
    assert page.count("<svg") >= 2
    assert "Site administration" in page or "django-admin" in page  # the model list is still below


def test_the_dashboard_counts_and_links_to_the_filtered_lists(staff_client: Any) -> None:
    made = seed()
    page = staff_client.get("/admin/").content.decode()
    found = queues(page)
    assert found["Messages that need review"] == ("3", "/admin/messageservice/message/?state__exact=needs_review")
    assert found["Portals that need a reinstall"] == ("1", "/admin/tenants/portal/?status__exact=needs_reinstall")
    assert found["Blocked portals"] == ("2", "/admin/tenants/portal/?status__exact=blocked")
    assert found["Install runs failed (7 days)"][0] == "1"
    assert found["Install runs stuck (pending)"][0] == "1"
    assert found["Widget bindings missing or failing"] == ("1", "/admin/placements/binding/?problem=yes")
    assert found["Senders missing in Bitrix24"][0] == "1"
    # failed in the last 24 h, by carrier and reason (the 3-day-old failures are not counted)
    assert found["Sends failed in 24 h: sandbox"][0] == "4"
    assert found["Sends failed in 24 h: smsru"][0] == "2"
    assert found[f"REST 503 burst: {made[0].domain}"] == (
        "40", f"/admin/oauth/restcalldaily/?portal={made[0].pk}&outcome=error")
    assert made[0].domain in page and "Top portals by failure rate" in page
    # every link opens its changelist filtered to exactly the counted rows
    for label, (count, href) in found.items():
        response = staff_client.get(href)
        assert response.status_code == 200, (label, href)
        if not label.startswith("REST"):  # a burst counts calls; its link lists the day rows
            assert response.context["cl"].result_count == int(count), (label, href)


def test_the_dashboard_query_count_does_not_grow_with_rows(staff_client: Any) -> None:
    seed(portals=2, per_portal=2)
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get("/admin/").status_code == 200
    seed(portals=12, per_portal=60)
    with CaptureQueriesContext(connection) as many:
        assert staff_client.get("/admin/").status_code == 200
    assert len(many) == len(few)
    assert len(many) <= 20
    # never a COUNT over the whole message table: every message query is bounded by an index condition
    for query in many.captured_queries:
        sql = query["sql"]
        if '"messageservice_message"' in sql and "COUNT" in sql.upper():
            assert "created_at" in sql or "needs_review" in sql, sql


def test_the_charts_cover_fourteen_days() -> None:
    from console.dashboard import rest_chart, sms_chart

    today: date = timezone.now().date()
    assert f"{today - timedelta(days=13):%Y-%m-%d}" not in sms_chart()  # no bars on an empty database
    assert "REST calls per day (14 days)" in rest_chart()


def test_handler_messages_the_dispatcher_left_owed_are_counted_once_stale_and_linked(staff_client: Any) -> None:
    account = make_account(PortalFactory())
    stale = make_messages(account, 2, state=Message.State.ACCEPTED, status=None, age=timedelta(minutes=5))
    fresh = make_messages(account, 1, state=Message.State.ACCEPTED, status=None, age=timedelta(seconds=1))
    make_messages(account, 3, state=Message.State.ACCEPTED, status=None, age=timedelta(minutes=5))  # published
    Message.objects.filter(pk__in=[m.pk for m in stale + fresh]).update(dispatch_pending=True)

    found = queues(staff_client.get("/admin/").content.decode())

    label = f"SMS not dispatched after {dispatch_stale_seconds()} s"
    count, href = found[label]
    assert count == "2"  # the fresh one is the dispatcher's normal work, the published ones are not owed
    listed = staff_client.get(href).context["cl"].result_list
    assert {m.pk for m in listed} == {m.pk for m in stale}
