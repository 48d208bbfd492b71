"""Periodic work at scale: what one beat tick of each dispatcher costs with N active portals.

    python -m benchmarks periodic_scale [--portals 1000,10000]

For each N (portals set up by direct inserts in a scratch database), each dispatcher is run once with
nothing due and once with 1% of the portals due, and prints: wall ms, SQL queries, tasks enqueued by the
tick, and tasks per hour if every tick looked like this one. Beside each line, the same figures for the previous dispatch
(one task per active portal on every tick, kept here as the baseline variant) measured in the same run.
Enqueued tasks are counted, not published (the broker is not what is measured).

The status dispatchers (`dispatch_status_pushes` every 5 s, `dispatch_status_polls` every 15 s) run over
the same portals, each with one provider account and `--messages` delivered messages, nothing due or 1% of
the portals with one message due (push_due / next_poll_at in the past); their baseline variant is the
previous dispatch (DISTINCT over due rows, one task per portal/account) measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from .common import scratch_database, setup_django


@contextmanager
def counted_tasks() -> Iterator[list[str]]:
    from celery.app.task import Task

    sent: list[str] = []
    original = Task.apply_async

    def count(self: Task, *args: Any, **kwargs: Any) -> None:
        sent.append(self.name)

    Task.apply_async = count  # type: ignore[method-assign]
    try:
        yield sent
    finally:
        Task.apply_async = original  # type: ignore[method-assign]


def measure(func: Callable[[], Any]) -> tuple[float, int, int]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with counted_tasks() as sent, CaptureQueriesContext(connection) as queries:
        start = time.perf_counter()
        func()
        wall = (time.perf_counter() - start) * 1000
    return wall, len(queries.captured_queries), len(sent)


def old_one_task_per_portal(task_name: str) -> Callable[[], int]:
    """The dispatch before due times: every active portal, one task each, every tick."""
    from b24portal.celery import app
    from tenants.models import Portal

    def run() -> int:
        ids = list(Portal.objects.filter(status=Portal.Status.ACTIVE).values_list("pk", flat=True))
        task = app.tasks[task_name]
        for portal_id in ids:
            task.delay(portal_id)
        return len(ids)

    return run


def old_status_dispatch(kind: str) -> Callable[[], int]:
    """The status dispatch before issue 11: DISTINCT over the due rows (limit 1000), one task each."""
    from django.utils import timezone

    from messageservice import delivery
    from messageservice.models import Message

    def run() -> int:
        if kind == "push":
            ids = list(Message.objects.filter(push_due=True).order_by()
                       .values_list("portal_id", flat=True).distinct()[:1000])
            for portal_id in ids:
                delivery.push_portal_statuses.delay(portal_id)
        else:
            ids = list(Message.objects.filter(next_poll_at__lte=timezone.now()).order_by()
                       .values_list("account_id", flat=True).distinct()[:1000])
            for account_id in ids:
                delivery.poll_account.delay(account_id)
        return len(ids)

    return run


def setup_messages(per_portal: int) -> None:
    """One provider account and `per_portal` delivered messages (nothing due) per portal, by direct inserts."""
    import secrets

    from django.utils import timezone

    from messageservice.models import Message, ProviderAccount
    from tenants.models import Portal

    now = timezone.now()
    ids = list(Portal.objects.values_list("pk", flat=True))
    ProviderAccount.objects.bulk_create(
        [ProviderAccount(portal_id=pid, carrier="smsru", code="sms", name="SMS") for pid in ids], batch_size=2000)
    accounts = dict(ProviderAccount.objects.values_list("portal_id", "pk"))
    Message.objects.bulk_create(
        [Message(portal_id=pid, account_id=accounts[pid], carrier="smsru", message_id=secrets.token_hex(16),
                 origin="crm", recipient_raw="+79991234567", body="hi", state="sent_to_carrier",
                 status="delivered", pushed_status="delivered", status_changed_at=now, created_at=now)
         for pid in ids for _ in range(per_portal)], batch_size=2000)
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def make_status_due(fraction: float) -> None:
    from django.utils import timezone

    from messageservice.models import Message

    first = list(Message.objects.order_by("portal_id", "pk").distinct("portal_id").values_list("pk", flat=True))
    step = max(int(1 / fraction), 1)
    Message.objects.filter(pk__in=first[::step]).update(
        push_due=True, status="delivered", pushed_status="sent", next_poll_at=timezone.now() - timedelta(seconds=1))


def status_dispatchers(n: int, per_portal: int) -> None:
    from messageservice import delivery

    setup_messages(per_portal)
    periods = {"push": 5, "poll": 15}
    for case, fraction in (("nothing due", 0.0), ("1% due", 0.01)):
        if fraction:
            make_status_due(fraction)
        for name, new, kind in (("dispatch_status_pushes", delivery.dispatch_status_pushes, "push"),
                                ("dispatch_status_polls", delivery.dispatch_status_polls, "poll")):
            new_ms, new_q, new_tasks = measure(new)
            old_ms, old_q, old_tasks = measure(old_status_dispatch(kind))
            per_hour = 3600 / periods[kind]
            print(f"{n:>6} {name:<26} {case:<12} {new_ms:>8.1f} {new_q:>4} {new_tasks:>6} "
                  f"{new_tasks * per_hour:>9.0f}   {old_ms:>8.1f} {old_q:>4} {old_tasks:>6} {old_tasks * per_hour:>9.0f}")


def setup_portals(n: int) -> None:
    import secrets

    from django.utils import timezone

    from messageservice.models import Message, ProviderAccount
    from tenants import schedule
    from tenants.models import Portal, PortalCheck

    Message.objects.all().delete()
    ProviderAccount.objects.all().delete()
    Portal.objects.all().delete()
    now = timezone.now()
    Portal.objects.bulk_create(
        [Portal(member_id=secrets.token_hex(16), domain=f"p{i}.bitrix24.com",
                rest_endpoint=f"https://p{i}.bitrix24.com/rest/", status=Portal.Status.ACTIVE) for i in range(n)],
        batch_size=2000)
    ids = list(Portal.objects.values_list("pk", flat=True))
    for kind in schedule.registered_kinds():
        # Nothing due: every first due time lies ahead, spread over the interval.
        PortalCheck.objects.bulk_create(
            [PortalCheck(portal_id=pid, kind=kind, due_at=now + timedelta(minutes=5)
                         + schedule.spread_offset(pid, kind, schedule.interval_of(kind))) for pid in ids],
            batch_size=2000)


def make_due(fraction: float) -> None:
    from django.utils import timezone

    from tenants.models import PortalCheck

    rows = list(PortalCheck.objects.order_by("pk").values_list("pk", flat=True))
    step = max(int(1 / fraction), 1)
    PortalCheck.objects.filter(pk__in=rows[::step]).update(due_at=timezone.now() - timedelta(seconds=1))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks periodic_scale")
    parser.add_argument("--portals", default="1000,10000")
    parser.add_argument("--messages", type=int, default=3, help="delivered messages per portal (status dispatchers)")
    args = parser.parse_args(argv)
    setup_django()
    from django.conf import settings

    from messageservice.tasks import reconcile_all_senders
    from oauth.tasks import refresh_all_capabilities
    from placements.tasks import reconcile_all_bindings

    dispatchers = [
        ("reconcile_all_senders", reconcile_all_senders, "messageservice.tasks.reconcile_portal_senders"),
        ("reconcile_all_bindings", reconcile_all_bindings, "placements.tasks.reconcile_portal_bindings"),
        ("refresh_all_capabilities", refresh_all_capabilities, "oauth.tasks.check_capabilities"),
    ]
    old_periods = {"reconcile_all_senders": 600, "reconcile_all_bindings": 3600, "refresh_all_capabilities": 86400}
    tick = settings.B24_DUE_CHECKS_TICK_SECONDS
    print(f"beat tick of the new dispatchers: {tick} s; old periods: {old_periods}")
    print(f"{'N':>6} {'task':<26} {'case':<12} {'new ms':>8} {'q':>4} {'tasks':>6} {'tasks/h':>9}   "
          f"{'old ms':>8} {'q':>4} {'tasks':>6} {'tasks/h':>9}")
    with scratch_database("bench_periodic"):
        for n in [int(x) for x in args.portals.split(",")]:
            setup_portals(n)
            totals = {"new": 0.0, "old": 0.0}
            for case, fraction in (("nothing due", 0.0), ("1% due", 0.01)):
                for name, dispatcher, old_task in dispatchers:
                    if fraction:
                        make_due(fraction)
                    new_ms, new_q, new_tasks = measure(dispatcher)
                    old_ms, old_q, old_tasks = measure(old_one_task_per_portal(old_task))
                    new_per_hour = new_tasks * 3600 / tick
                    old_per_hour = old_tasks * 3600 / old_periods[name]
                    if case == "nothing due":
                        totals["new"] += new_per_hour
                        totals["old"] += old_per_hour
                    print(f"{n:>6} {name:<26} {case:<12} {new_ms:>8.1f} {new_q:>4} {new_tasks:>6} "
                          f"{new_per_hour:>9.0f}   {old_ms:>8.1f} {old_q:>4} {old_tasks:>6} {old_per_hour:>9.0f}")
            print(f"{n:>6} all three, nothing due: {totals['new']:.0f} tasks/h (old: {totals['old']:.0f} tasks/h)")
            status_dispatchers(n, args.messages)
    return 0
