"""Admin home: attention queues (each a count linking to the filtered changelist), charts of the last 14
days, and the top portals. Every number comes from an indexed query or a daily roll-up, in a fixed number of
queries whatever the row counts (tests/console/test_dashboard.py):

* message counts use the partial index of the states staff act on (`sms_msg_needs_staff`) and are bounded
  by SMS_ADMIN_COUNT_CAP (shown as "≥ cap"); the charts and top portals scan the 14-day window of
  `sms_msg_created`, never the whole table;
* REST figures come from `RestCallDaily` (one row per portal, day, method and error code);
* portals, bindings and provider accounts are grouped on indexed status columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.urls import reverse
from django.utils import timezone

from b24portal.charts import daily_series, stacked_bars_svg
from messageservice.models import Message, ProviderAccount
from messageservice.status import CHART_COLOURS, CHART_LABELS, CHART_ORDER, display_status
from oauth.models import RestCallDaily
from placements.models import Binding
from tenants.models import InstallRun, Portal

CHART_DAYS = 14
TOP_PORTALS = 10
#: error codes of a REST burst: the portal's limit (503) and dead tokens (401)
BURST_CODES = {"QUERY_LIMIT_EXCEEDED": "503", "OVERLOAD_LIMIT": "503", "expired_token": "401",
               "invalid_token": "401"}
#: calls with one of those codes in the last two days that make a burst worth a look
BURST_MIN_CALLS = 10
#: failed sends shown by (carrier, reason)
FAILED_GROUPS = 10


@dataclass(frozen=True)
class Queue:
    """One attention queue: `count` rows, listed at `url`; `capped` when the count stopped at the cap."""

    label: str
    count: int
    url: str
    capped: bool = False
    detail: str = ""


def _url(name: str, **params: Any) -> str:
    url = reverse(f"admin:{name}_changelist")
    return f"{url}?{urlencode(params)}" if params else url


def _bounded(queryset: QuerySet[Any], cap: int) -> tuple[int, bool]:
    n = queryset.order_by()[:cap].count()
    return n, n >= cap


def dispatch_stale_seconds() -> int:
    """How long a handler message may wait for the outbox dispatcher before the dashboard shows it: three
    of the dispatcher's safety polls, and never under a minute."""
    return max(60, 3 * int(settings.SMS_DISPATCH_POLL_SECONDS))


def attention_queues() -> list[Queue]:
    now = timezone.now()
    cap = int(settings.SMS_ADMIN_COUNT_CAP)
    queues: list[Queue] = []

    # Messages: partial index sms_msg_needs_staff (state in failed / needs_review), bounded.
    n, capped = _bounded(Message.objects.filter(state=Message.State.NEEDS_REVIEW), cap)
    queues.append(Queue("Messages that need review", n, _url("messageservice_message", state__exact="needs_review"),
                        capped))
    # Handler messages the SMS worker's outbox dispatcher has not published (partial index
    # sms_msg_dispatch_pending, a handful of rows): one that stays owed means no SMS worker runs the
    # dispatcher. The sweeper sends them after SMS_REDISPATCH_AFTER_SECONDS, but staff should know why.
    stale_after = dispatch_stale_seconds()
    owed_since = now - timedelta(seconds=stale_after)
    n, capped = _bounded(Message.objects.filter(dispatch_pending=True, created_at__lt=owed_since), cap)
    queues.append(Queue(f"SMS not dispatched after {stale_after} s", n,
                        _url("messageservice_message", dispatch_pending__exact="1",
                             created_at__lt=owed_since.isoformat(timespec="seconds")), capped))
    since = now - timedelta(hours=24)
    failed = (Message.objects.filter(state=Message.State.FAILED, created_at__gte=since)
              .values("carrier", "last_error").annotate(n=Count("id")).order_by("-n", "carrier")[:FAILED_GROUPS])
    for row in failed:
        params = {"state__exact": "failed", "carrier": row["carrier"],
                  "created_at__gte": since.isoformat(timespec="seconds"), "last_error": row["last_error"]}
        queues.append(Queue(f"Sends failed in 24 h: {row['carrier']}", row["n"],
                            _url("messageservice_message", **params), detail=row["last_error"] or "(no reason)"))

    # Portals (indexed status).
    by_status = dict(Portal.objects.filter(status__in=[Portal.Status.NEEDS_REINSTALL, Portal.Status.BLOCKED])
                     .values_list("status").annotate(n=Count("id")).order_by())
    for status, label in ((Portal.Status.NEEDS_REINSTALL, "Portals that need a reinstall"),
                          (Portal.Status.BLOCKED, "Blocked portals")):
        queues.append(Queue(label, by_status.get(status, 0), _url("tenants_portal", status__exact=status)))

    # Install runs: failed in the last 7 days; stuck = pending/running with no progress for long.
    week = now - timedelta(days=7)
    n, capped = _bounded(InstallRun.objects.filter(status=InstallRun.Status.FAILED, created_at__gte=week), cap)
    queues.append(Queue("Install runs failed (7 days)", n,
                        _url("tenants_installrun", status__exact="failed",
                             created_at__gte=week.isoformat(timespec="seconds")), capped))
    stale = now - timedelta(seconds=2 * int(settings.B24_INSTALL_REDISPATCH_AFTER_SECONDS))
    for run_status in (InstallRun.Status.PENDING, InstallRun.Status.RUNNING):
        n, capped = _bounded(InstallRun.objects.filter(status=run_status, progress_at__lt=stale), cap)
        queues.append(Queue(f"Install runs stuck ({run_status})", n,
                            _url("tenants_installrun", status__exact=run_status,
                                 progress_at__lt=stale.isoformat(timespec="seconds")), capped))

    # After the last reconcile: bindings missing or failing, senders not registered.
    n, capped = _bounded(Binding.objects.filter(state__in=[Binding.State.MISSING, Binding.State.ERROR]), cap)
    queues.append(Queue("Widget bindings missing or failing", n, _url("placements_binding", problem="yes"), capped))
    senders = dict(ProviderAccount.objects.filter(
        is_active=True, registration_state__in=[ProviderAccount.Registration.FAILED,
                                                ProviderAccount.Registration.REMOVED])
        .values_list("registration_state").annotate(n=Count("id")).order_by())
    for state, label in ((ProviderAccount.Registration.FAILED, "Senders whose registration failed"),
                         (ProviderAccount.Registration.REMOVED, "Senders missing in Bitrix24")):
        queues.append(Queue(label, senders.get(state, 0),
                            _url("messageservice_provideraccount", registration_state__exact=state,
                                 is_active__exact="1")))

    # REST bursts per portal: the daily roll-up of today and yesterday.
    bursts = (RestCallDaily.objects.filter(day__gte=now.date() - timedelta(days=1), error_code__in=BURST_CODES)
              .values("portal_id", "portal__domain", "error_code").annotate(n=Sum("calls"))
              .filter(n__gte=BURST_MIN_CALLS).order_by("-n")[:TOP_PORTALS])
    for row in bursts:
        queues.append(Queue(f"REST {BURST_CODES[row['error_code']]} burst: {row['portal__domain']}", row["n"],
                            _url("oauth_restcalldaily", portal=row["portal_id"], outcome="error"),
                            detail=row["error_code"]))
    return queues


def sms_chart(days: int = CHART_DAYS) -> Any:
    since = timezone.now() - timedelta(days=days)
    rows = [{**row, "shown": display_status(row["status"], row["state"])}
            for row in (Message.objects.filter(created_at__gte=since).annotate(day=TruncDate("created_at"))
                        .values("day", "status", "state").annotate(n=Count("id")).order_by())]
    return stacked_bars_svg(daily_series(rows, key="shown", value="n", days=days),
                            title=f"SMS per day by delivery status ({days} days)", colours=CHART_COLOURS,
                            order=CHART_ORDER, labels=CHART_LABELS)


def rest_chart(days: int = CHART_DAYS) -> Any:
    first = timezone.now().date() - timedelta(days=days - 1)
    rows = (RestCallDaily.objects.filter(day__gte=first).values("day")
            .annotate(ok=Sum("calls", filter=Q(error_code="")), error=Sum("calls", filter=~Q(error_code="")))
            .order_by())
    flat = [{"day": r["day"], "outcome": outcome, "n": r[outcome] or 0} for r in rows for outcome in ("ok", "error")]
    return stacked_bars_svg(daily_series(flat, key="outcome", value="n", days=days),
                            title=f"REST calls per day ({days} days)", colours={"ok": "#2b8a3e", "error": "#c92a2a"},
                            order=("ok", "error"), labels={"ok": "success", "error": "error"})


def top_portals(days: int = CHART_DAYS, limit: int = TOP_PORTALS) -> dict[str, list[dict[str, Any]]]:
    """Portals by SMS volume and by failure rate over the window (one grouped query + one for domains)."""
    since = timezone.now() - timedelta(days=days)
    failed = Message.failed_send_q()
    rows = list(Message.objects.filter(created_at__gte=since).values("portal_id")
                .annotate(total=Count("id"), failed=Count("id", filter=failed)).order_by())
    for row in rows:
        row["rate"] = round(100 * row["failed"] / row["total"], 1) if row["total"] else 0.0
    by_volume = sorted(rows, key=lambda r: (-r["total"], r["portal_id"]))[:limit]
    by_failure = sorted((r for r in rows if r["failed"]), key=lambda r: (-r["rate"], -r["failed"], r["portal_id"]))[:limit]
    ids = {r["portal_id"] for r in by_volume + by_failure}
    domains = dict(Portal.objects.filter(pk__in=ids).values_list("pk", "domain")) if ids else {}
    for row in by_volume + by_failure:
        row["domain"] = domains.get(row["portal_id"], str(row["portal_id"]))
        row["url"] = _url("messageservice_message", portal=row["portal_id"])
    return {"by_volume": by_volume, "by_failure": by_failure}


def dashboard_context() -> dict[str, Any]:
    return {
        "queues": attention_queues(),
        "sms_chart": sms_chart(),
        "rest_chart": rest_chart(),
        "top": top_portals(),
        "chart_days": CHART_DAYS,
        "records_jobs_enabled": False,
    }
