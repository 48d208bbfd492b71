"""One log row per HTTP request, roll-ups, retention, the admin chart and lists without N+1."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from oauth import calllog
from oauth.errors import B24AccessDenied
from oauth.models import PortalCapabilities, RestCall, RestCallDaily
from tests.factories import PortalFactory
from tests.oauth.conftest import register_echo

pytestmark = pytest.mark.django_db


def test_each_http_request_is_one_row_and_a_batch_is_one_row_with_its_size(client_for, fake_portal, portal):
    register_echo(fake_portal)
    client = client_for()
    client.call("app.info")
    client.batch({f"k{i}": ("test.echo", {}) for i in range(70)})
    rows = list(RestCall.objects.filter(portal=portal).order_by("id").values_list("method", "batch_size",
                                                                               "http_status", "error_code"))
    assert rows == [("app.info", None, 200, ""), ("batch", 50, 200, ""), ("batch", 20, 200, "")]
    assert RestCall.objects.filter(portal=portal, method="app.info").get().operating is not None


def test_a_failed_call_is_logged_with_its_error_code(client_for, fake_portal, portal):
    fake_portal.fail_next("app.info", "ACCESS_DENIED", "no", 403)
    with pytest.raises(B24AccessDenied):
        client_for().call("app.info")
    assert RestCall.objects.get(portal=portal).error_code == "ACCESS_DENIED"


def test_a_failing_log_write_does_not_break_the_call(client_for, fake_portal, portal, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(RestCall.objects, "create", broken)
    assert client_for().call("app.info")["ID"] == fake_portal.app_id


def test_rollup_counts_calls_per_day_method_and_error_and_pruning_keeps_the_rollup(portal, settings):
    settings.B24_CALL_LOG_RETENTION_DAYS = 14
    old = timezone.now() - timedelta(days=20)
    for code in ("", "", "QUERY_LIMIT_EXCEEDED"):
        RestCall.objects.create(portal=portal, method="crm.deal.list", http_status=200 if not code else 503,
                                error_code=code, duration_ms=100, created_at=old)
    RestCall.objects.create(portal=portal, method="batch", batch_size=50, http_status=200, duration_ms=10)
    assert calllog.prune() == 3
    assert RestCall.objects.count() == 1
    day = timezone.localdate(old)
    rolled = {r.error_code: r.calls for r in RestCallDaily.objects.filter(day=day, portal=portal)}
    assert rolled == {"": 2, "QUERY_LIMIT_EXCEEDED": 1}
    assert calllog.rollup_day(day) == 0 and RestCallDaily.objects.filter(day=day).count() == 2  # kept
    assert calllog.rollup_day(timezone.localdate()) == 1
    assert RestCallDaily.objects.get(day=timezone.localdate()).commands == 50


def test_the_chart_is_a_stacked_svg_with_one_colour_per_error_code():
    today = timezone.localdate()
    rows = [{"day": today, "error_code": "", "calls": 10}, {"day": today, "error_code": "ACCESS_DENIED", "calls": 3},
            {"day": today - timedelta(days=2), "error_code": "<script>", "calls": 1}]
    svg = str(calllog.chart_svg(calllog.chart_data(rows, days=7, today=today)))
    assert svg.startswith("<svg") and svg.count("<rect") == 3 + 3  # three bars + three legend keys
    assert "ACCESS_DENIED: 3" in svg and "<script>" not in svg and "&lt;script&gt;" in svg


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


def _queries(staff_client, url: str) -> tuple[int, str]:
    with CaptureQueriesContext(connection) as ctx:
        response = staff_client.get(url)
    assert response.status_code == 200
    return len(ctx.captured_queries), response.content.decode()


def _make_rows(count: int) -> None:
    for _ in range(count):
        portal = PortalFactory()
        RestCall.objects.create(portal=portal, method="app.info", http_status=200, duration_ms=5)
        RestCallDaily.objects.create(portal=portal, day=timezone.localdate(), method="app.info",
                                     error_code="ACCESS_DENIED", calls=2)
        PortalCapabilities.objects.create(portal=portal, ok=True, checked_at=timezone.now())


@pytest.mark.parametrize("url", ["/admin/oauth/restcall/", "/admin/oauth/restcalldaily/",
                                 "/admin/oauth/portalcapabilities/"])
def test_admin_lists_make_the_same_number_of_queries_for_5_or_50_rows(staff_client, url):
    _make_rows(5)
    few, _ = _queries(staff_client, url)
    _make_rows(45)
    many, _ = _queries(staff_client, url)
    assert many == few


def test_the_daily_admin_shows_a_chart_globally_and_per_portal(staff_client):
    mine, other = PortalFactory(domain="mine.bitrix24.com"), PortalFactory(domain="other.bitrix24.com")
    RestCallDaily.objects.create(portal=mine, day=timezone.localdate(), method="app.info", error_code="", calls=7)
    RestCallDaily.objects.create(portal=other, day=timezone.localdate(), method="app.info",
                                 error_code="ACCESS_DENIED", calls=4)
    _, page = _queries(staff_client, "/admin/oauth/restcalldaily/")
    assert "<svg" in page and "all portals" in page and "ACCESS_DENIED: 4" in page
    _, page = _queries(staff_client, f"/admin/oauth/restcalldaily/?portal={mine.pk}")
    assert "<svg" in page and "mine.bitrix24.com" in page and "ACCESS_DENIED: 4" not in page and ": 7" in page


def test_check_now_queues_a_capability_check(staff_client, installed_portal, fake_portal,
                                             django_capture_on_commit_callbacks):
    caps = PortalCapabilities.objects.get(portal=installed_portal)
    before = fake_portal.count("scope")
    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post("/admin/oauth/portalcapabilities/",
                                     {"action": "check_now", "_selected_action": [caps.pk]})
    assert response.status_code == 302
    assert fake_portal.count("scope") == before + 1


# -- routine calls of periodic checks: counted, not logged row by row (issue 15) ----------------------
def daily_calls(portal, **filters) -> dict[tuple[str, str], int]:
    return {(r.method, r.error_code): r.calls
            for r in RestCallDaily.objects.filter(portal=portal, day=timezone.localdate(), **filters)}


def test_routine_successes_are_counted_without_a_row_and_failures_keep_theirs(client_for, fake_portal, portal):
    from oauth.models import RestCallCount

    register_echo(fake_portal)
    client = client_for()
    with calllog.routine():
        client.call("app.info")
        client.call("app.info")
        client.batch({f"k{i}": ("test.echo", {}) for i in range(70)})
        fake_portal.fail_next("app.info", "ACCESS_DENIED", "no", 403)
        with pytest.raises(B24AccessDenied):
            client.call("app.info")
    client.call("app.info")  # not a periodic check: a row, as always

    rows = list(RestCall.objects.filter(portal=portal).order_by("id").values_list("method", "error_code"))
    assert rows == [("app.info", "ACCESS_DENIED"), ("app.info", "")]
    assert calllog.pending_counts() == 4
    assert calllog.flush_counts() == 4 and calllog.pending_counts() == 0
    counted = {c.method: (c.calls, c.commands) for c in RestCallCount.objects.filter(portal=portal)}
    assert counted == {"app.info": (2, 2), "batch": (2, 70)}

    # The roll-up (and so the admin chart) counts every call: 3 successful app.info, 1 failed, 2 batches.
    calllog.rollup_day(timezone.localdate())
    assert daily_calls(portal) == {("app.info", ""): 3, ("app.info", "ACCESS_DENIED"): 1, ("batch", ""): 2}
    assert RestCallDaily.objects.get(portal=portal, method="batch").commands == 70
    # Idempotent: rebuilding the day does not count the counted calls twice.
    calllog.rollup_day(timezone.localdate())
    assert daily_calls(portal)[("app.info", "")] == 3


def test_counts_are_added_up_across_flushes_and_pruned_with_the_raw_rows(client_for, fake_portal, portal, settings):
    from oauth.models import RestCallCount

    for _ in range(2):
        with calllog.routine():
            client_for().call("app.info")
        calllog.flush_counts()
    assert RestCallCount.objects.get(portal=portal).calls == 2

    old_day = timezone.localdate() - timedelta(days=30)
    RestCallCount.objects.filter(portal=portal).update(day=old_day)
    settings.B24_CALL_LOG_RETENTION_DAYS = 14
    calllog.prune()
    assert not RestCallCount.objects.exists()
    assert RestCallDaily.objects.get(portal=portal, day=old_day).calls == 2  # rolled up before pruning


def test_a_periodic_capability_check_writes_no_rows_for_its_successes(fake_portal, portal):
    from oauth.tasks import check_capabilities

    check_capabilities.apply(args=[portal.pk])
    assert not RestCall.objects.filter(portal=portal).exists()
    made = calllog.pending_counts() or 0
    assert made >= 1
    calllog.rollup_day(timezone.localdate())
    assert sum(daily_calls(portal).values()) == made

    # The same check on a staff member's request ("check now" runs the function, not the periodic task)
    # keeps its rows.
    from oauth.capabilities import check_portal
    from oauth.client import PortalClient

    check_portal(portal, PortalClient(portal))
    assert RestCall.objects.filter(portal=portal).count() == made
