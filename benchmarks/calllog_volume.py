"""Benchmark: REST call-log rows written in one hour of periodic checks at N portals (issue 15).

    python -m benchmarks calllog_volume [--portals 10000] [--failure-every 1000]

Two variants through the real recording path (`oauth.calllog.record`, as `PortalClient` calls it after
every request), in a scratch database with N portals:

* old: the periodic schedule before due times (sender reconcile every 10 min, binding reconcile every hour,
  capability check every day), every call outside a routine-task context: one `RestCall` row per call;
* new: each portal's sender, binding and capability check once a day, spread over the day (N × 3 / 24
  checks an hour), each inside `calllog.routine()` as the registered periodic tasks run: successful calls
  are counted into `RestCallCount`, failures keep their row.

REST calls per check (the real reconciles): sender reconcile 1 (`messageservice.sender.list`), binding
reconcile 4 (`placement.get` and the user-field lists of the CRM entities), capability check 1 (`batch`).
Every `--failure-every`-th call fails (error code `QUERY_LIMIT_EXCEEDED`, 503) in both variants. Printed per
variant: calls made, raw `RestCall` rows and `RestCallCount` rows written, and the roll-up (`rollup_day`)
totals, which must equal the calls made.
"""

from __future__ import annotations

import argparse
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .common import scratch_database, setup_django

SENDER_CALLS = ("messageservice.sender.list",)
BINDING_CALLS = ("placement.get", "crm.lead.userfield.list", "crm.deal.userfield.list", "crm.contact.userfield.list")
CAPABILITY_CALLS = ("batch",)
CHECKS: dict[str, tuple[str, ...]] = {"sender": SENDER_CALLS, "binding": BINDING_CALLS, "capability": CAPABILITY_CALLS}
OLD_PER_HOUR: dict[str, float] = {"sender": 6.0, "binding": 1.0, "capability": 1 / 24}  # runs per portal per hour
NEW_PER_HOUR: dict[str, float] = {"sender": 1 / 24, "binding": 1 / 24, "capability": 1 / 24}


@dataclass
class Volume:
    checks: int = 0
    calls: int = 0
    failures: int = 0


def hour_of_checks(portal_ids: list[int], per_hour: dict[str, float]) -> Iterator[tuple[int, str]]:
    """(portal_id, check kind) for one hour: `per_hour[kind]` runs per portal, whole runs spread evenly
    (a portal's k-th slot of the day falls in this hour for 1/24 of the portals)."""
    n = len(portal_ids)
    for kind, rate in per_hour.items():
        runs = round(n * rate)
        for index in range(runs):
            yield portal_ids[index % n], kind


def expected_calls(portals: int, per_hour: dict[str, float]) -> int:
    return sum(round(portals * rate) * len(CHECKS[kind]) for kind, rate in per_hour.items())


def _simulate(portals: list[Any], per_hour: dict[str, float], *, routine: bool, failure_every: int) -> Volume:

    from django.db import transaction

    from oauth import calllog

    volume = Volume()
    by_id = {p.pk: p for p in portals}
    checks = list(hour_of_checks(list(by_id), per_hour))
    for start in range(0, len(checks), 500):
        # A transaction per 500 checks only to spare the shared machine 100,000 commits: record() still
        # writes each row on its own (in a savepoint); rows are counted, not timed.
        with transaction.atomic():
            _run_checks(by_id, checks[start:start + 500], volume, routine=routine, failure_every=failure_every)
    calllog.flush_counts()  # what the worker does on its flush period and at shutdown
    return volume


def _run_checks(by_id: dict[int, Any], checks: list[tuple[int, str]], volume: Volume, *, routine: bool,
                failure_every: int) -> None:
    from contextlib import nullcontext

    from oauth import calllog

    for portal_id, kind in checks:
        volume.checks += 1
        with calllog.routine() if routine else nullcontext():
            for method in CHECKS[kind]:
                volume.calls += 1
                failed = bool(failure_every) and volume.calls % failure_every == 0
                volume.failures += int(failed)
                calllog.record(by_id[portal_id], method=method, batch_size=3 if method == "batch" else None,
                               http_status=503 if failed else 200,
                               error_code="QUERY_LIMIT_EXCEEDED" if failed else "", duration=0.12, operating=None)


def _clear() -> None:
    from oauth.models import RestCall, RestCallCount, RestCallDaily

    RestCall.objects.all().delete()
    RestCallCount.objects.all().delete()
    RestCallDaily.objects.all().delete()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks calllog_volume", description=__doc__.split("\n")[0])
    parser.add_argument("--portals", type=int, default=10_000)
    parser.add_argument("--failure-every", type=int, default=1000, help="every k-th call fails (0: none)")
    args = parser.parse_args(argv)

    setup_django()
    from django.db.models import Sum
    from django.utils import timezone

    from oauth import calllog
    from oauth.models import RestCall, RestCallCount, RestCallDaily
    from tenants.models import Portal

    results: list[tuple[str, Volume, int, int, int, int, float]] = []
    with scratch_database("bench_calllog"):
        Portal.objects.bulk_create(
            [Portal(member_id=secrets.token_hex(16), domain=f"p{i}.bitrix24.com",
                    rest_endpoint=f"https://p{i}.bitrix24.com/rest/", status=Portal.Status.ACTIVE)
             for i in range(args.portals)], batch_size=2000)
        portals = list(Portal.objects.only("pk", "member_id").order_by("pk"))
        today = timezone.localdate()
        for name, per_hour, routine in (("old: row per call (10 min / 1 h / 1 day)", OLD_PER_HOUR, False),
                                        ("new: daily checks, routine calls counted", NEW_PER_HOUR, True)):
            _clear()
            calllog.flush_counts()
            started = time.perf_counter()
            volume = _simulate(portals, per_hour, routine=routine, failure_every=args.failure_every)
            seconds = time.perf_counter() - started
            raw_rows = RestCall.objects.count()
            count_rows = RestCallCount.objects.count()
            daily_rows = calllog.rollup_day(today)
            rolled = RestCallDaily.objects.filter(day=today).aggregate(calls=Sum("calls"))["calls"] or 0
            results.append((name, volume, raw_rows, count_rows, daily_rows, rolled, seconds))
        _clear()

    print(f"\ncall-log volume: one hour of periodic checks at {args.portals} portals; every "
          f"{args.failure_every or '∞'}-th call fails; calls recorded through oauth.calllog.record")
    print(f"{'variant':<44} {'checks/h':>9} {'calls/h':>9} {'failures':>8} {'RestCall rows/h':>16} "
          f"{'RestCallCount rows':>18} {'roll-up calls':>13} {'roll-up rows':>12} {'record s':>9}")
    for name, volume, raw_rows, count_rows, daily_rows, rolled, seconds in results:
        print(f"{name:<44} {volume.checks:>9} {volume.calls:>9} {volume.failures:>8} {raw_rows:>16} {count_rows:>18} "
              f"{rolled:>13} {daily_rows:>12} {seconds:>9.1f}")
    old, new = results[0], results[1]
    print(f"\nraw rows per hour: old {old[2]}, new {new[2]} ({old[2] / max(new[2], 1):.0f}× fewer; per day "
          f"{old[2] * 24} vs {new[2] * 24}); roll-up totals equal calls made: "
          f"old {'yes' if old[5] == old[1].calls else 'NO'}, new {'yes' if new[5] == new[1].calls else 'NO'}")
    print("(RestCallCount rows are upserted in place: one per portal, day and method, however many calls.)")
    return 0 if all(r[5] == r[1].calls for r in results) else 1
