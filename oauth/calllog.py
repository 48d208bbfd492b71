"""The REST call log: one row per HTTP request to Bitrix24, daily roll-ups, retention, and the chart.

`record()` runs after every request. It is one INSERT inside a savepoint, wrapped so that a failing
write (database down, a broken outer transaction) is logged and forgotten: the call's result matters more
than its log row. `journal_failure()` puts failures that need a human into the portal's journal, at most
once per portal, error code and method per `B24_REST_JOURNAL_INTERVAL` seconds (default one hour), so a
storm of identical failures is one line, not thousands.

Routine calls (issue 15): inside a periodic check (`routine()`, entered for the tasks apps register with
`count_routine_calls_of`), a *successful* call writes no row: it is counted in this process and the counts
are flushed into `RestCallCount` (one upsert per portal, day and method) every
`B24_CALL_LOG_COUNT_FLUSH_SECONDS`, when the worker process stops, and before a roll-up. Roll-ups add
them to the raw rows, so the daily figures and the admin charts still count every call. A failure, and
every call outside a periodic check (install steps, staff actions, anything on a user's behalf), keeps its
row. A process killed outright loses at most its unflushed counts (successes only).

Settings: `B24_CALL_LOG_ENABLED` (default True), `B24_CALL_LOG_RETENTION_DAYS` (raw rows, default 14),
`B24_CALL_LOG_DAILY_RETENTION_DAYS` (roll-ups, default 400), `B24_REST_JOURNAL_INTERVAL` (default 3600).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime, timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Count, Max, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.safestring import SafeString

from b24portal.charts import ChartDay, daily_series, stacked_bars_svg
from tenants.journal import Actor, journal
from tenants.models import Portal

from .errors import (
    B24AccessDenied,
    B24AuthError,
    B24BadResponse,
    B24Error,
    B24MethodNotFound,
    B24OperationLimit,
    B24PortalDeleted,
    B24PortalMoved,
    B24RateLimited,
    B24TokenExpired,
    B24TransportError,
)
from .models import RestCall, RestCallCount, RestCallDaily

logger = logging.getLogger(__name__)

# Failures a support engineer should see in the portal's journal. Method-specific business errors
# (ERROR_NOT_FOUND, ERROR_ARGUMENT, ...) belong to the caller, and our own limiter's "wait" is not a failure.
JOURNALED_ERRORS: tuple[type[B24Error], ...] = (
    B24AuthError, B24AccessDenied, B24MethodNotFound, B24PortalDeleted, B24PortalMoved, B24BadResponse,
    B24TransportError, B24OperationLimit, B24RateLimited,
)
LOCAL_CODES = {"RATE_LIMIT_WAIT", "OPERATING_DEFERRED"}


# -- routine calls: counted, not logged row by row -----------------------------------------------------
_routine: ContextVar[bool] = ContextVar("b24_routine_calls", default=False)
ROUTINE_TASKS: set[str] = set()
# (portal_id, day, method) -> [calls, commands, total_ms, max_ms]; per process, guarded for thread pools.
_counts: dict[tuple[int, date, str], list[int]] = {}
_counts_lock = threading.Lock()
_last_flush = time.monotonic()


def count_routine_calls_of(*task_names: str) -> None:
    """Declare periodic-check tasks (from an AppConfig.ready()): their successful calls are counted."""
    ROUTINE_TASKS.update(task_names)


@contextmanager
def routine() -> Iterator[None]:
    """Successful REST calls made inside are counted in the roll-ups without a raw row."""
    token = _routine.set(True)
    try:
        yield
    finally:
        _routine.reset(token)
        if time.monotonic() - _last_flush >= settings.B24_CALL_LOG_COUNT_FLUSH_SECONDS:
            flush_counts()


_task_tokens: dict[str, Any] = {}  # task id -> the routine() context entered for it


def enter_routine_task(sender: Any = None, task_id: str = "", task: Any = None, **kwargs: Any) -> None:
    """Celery task_prerun: a registered periodic check runs inside routine()."""
    if task is not None and task.name in ROUTINE_TASKS:
        context = routine()
        context.__enter__()
        _task_tokens[task_id] = context


def leave_routine_task(sender: Any = None, task_id: str = "", **kwargs: Any) -> None:
    context = _task_tokens.pop(task_id, None)
    if context is not None:
        context.__exit__(None, None, None)


def flush_on_shutdown(**kwargs: Any) -> None:
    flush_counts()


def _count(portal_id: int, method: str, batch_size: int | None, duration_ms: int) -> None:
    key = (portal_id, timezone.localdate(), method[:100])
    with _counts_lock:
        entry = _counts.setdefault(key, [0, 0, 0, 0])
        entry[0] += 1
        entry[1] += batch_size or 1
        entry[2] += duration_ms
        entry[3] = max(entry[3], duration_ms)


def pending_counts() -> int:
    """Calls counted in this process and not yet flushed."""
    with _counts_lock:
        return sum(entry[0] for entry in _counts.values())


# Only the table name is formatted in; every value is a placeholder.
_UPSERT = """
INSERT INTO {table} (portal_id, day, method, calls, commands, total_duration_ms, max_duration_ms)
VALUES {values}
ON CONFLICT (portal_id, day, method) DO UPDATE SET
    calls = {table}.calls + excluded.calls,
    commands = {table}.commands + excluded.commands,
    total_duration_ms = {table}.total_duration_ms + excluded.total_duration_ms,
    max_duration_ms = CASE WHEN excluded.max_duration_ms > {table}.max_duration_ms
                           THEN excluded.max_duration_ms ELSE {table}.max_duration_ms END
"""


def flush_counts() -> int:
    """Write this process's counted calls into RestCallCount (one statement). Returns calls flushed."""
    global _last_flush
    with _counts_lock:
        taken = dict(_counts)
        _counts.clear()
        _last_flush = time.monotonic()
    if not taken:
        return 0
    params: list[int | str | date] = []
    for (portal_id, day, method), entry in taken.items():
        params.extend((portal_id, day, method, *entry))
    calls = sum(entry[0] for entry in taken.values())
    sql = _UPSERT.format(table=RestCallCount._meta.db_table,
                         values=", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(taken)))
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)
    except Exception:
        logger.warning("REST call counts could not be written; %s calls are not in the roll-ups", calls,
                       exc_info=True)
        return 0
    return calls


def record(portal: Portal, *, method: str, batch_size: int | None, http_status: int | None, error_code: str,
           duration: float, operating: float | None) -> None:
    if not settings.B24_CALL_LOG_ENABLED:
        return
    if not error_code and _routine.get():
        _count(portal.pk, method, batch_size, max(int(duration * 1000), 0))
        return
    try:
        with transaction.atomic():  # a savepoint when inside a transaction: a failure leaves it usable
            RestCall.objects.create(portal_id=portal.pk, method=method[:100], batch_size=batch_size,
                                    http_status=http_status, error_code=error_code[:64],
                                    duration_ms=max(int(duration * 1000), 0), operating=operating)
    except Exception:
        logger.warning("REST call log write failed; the call itself is unaffected", exc_info=True,
                       extra={"member_id": portal.member_id, "method": method})


def journal_failure(portal: Portal, exc: B24Error, method: str) -> None:
    """Journal a REST failure that matters, once per (portal, code, method) per interval."""
    if isinstance(exc, B24TokenExpired) or exc.code in LOCAL_CODES or not isinstance(exc, JOURNALED_ERRORS):
        return
    interval = int(settings.B24_REST_JOURNAL_INTERVAL)
    try:
        if not cache.add(f"b24:rest-journal:{portal.member_id}:{exc.code}:{method}", 1, timeout=interval):
            return
        with transaction.atomic():
            journal(portal, "rest", f"{method}: {exc.code} {exc.description}"[:500],
                            level="warning" if exc.retryable else "error", actor=Actor.BITRIX24,
                            details={"method": method, "code": exc.code, "http_status": exc.http_status,
                                     "retryable": exc.retryable})
    except Exception:
        logger.warning("could not journal a REST failure", exc_info=True, extra={"member_id": portal.member_id})


# -- roll-ups and retention -----------------------------------------------------------------------------
def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = timezone.make_aware(datetime.combine(day, datetime.min.time()), timezone.get_default_timezone())
    return start, start + timedelta(days=1)


def rollup_day(day: date) -> int:
    """(Re)build the roll-up rows of one day from the raw rows and the counted routine calls; idempotent.
    Returns rows written."""
    flush_counts()
    start, end = _day_bounds(day)
    groups = (RestCall.objects.filter(created_at__gte=start, created_at__lt=end)
              .values("portal_id", "method", "error_code")
              .annotate(calls=Count("id"), commands=Sum(Coalesce("batch_size", 1)),
                        total=Sum("duration_ms"), longest=Max("duration_ms")))
    merged: dict[tuple[int, str, str], RestCallDaily] = {}
    for g in groups:
        merged[(g["portal_id"], g["method"], g["error_code"])] = RestCallDaily(
            portal_id=g["portal_id"], day=day, method=g["method"], error_code=g["error_code"], calls=g["calls"],
            commands=g["commands"] or 0, total_duration_ms=g["total"] or 0, max_duration_ms=g["longest"] or 0)
    for counted in RestCallCount.objects.filter(day=day):  # routine successes: error_code ""
        row = merged.setdefault((counted.portal_id, counted.method, ""), RestCallDaily(
            portal_id=counted.portal_id, day=day, method=counted.method, error_code=""))
        row.calls += counted.calls
        row.commands += counted.commands
        row.total_duration_ms += counted.total_duration_ms
        row.max_duration_ms = max(row.max_duration_ms, counted.max_duration_ms)
    rows = list(merged.values())
    with transaction.atomic():
        if rows:
            # Only replace the day's roll-up when raw rows exist: after pruning, the roll-up is all we have.
            RestCallDaily.objects.filter(day=day).delete()
            RestCallDaily.objects.bulk_create(rows)
    return len(rows)


def prune(now: datetime | None = None, *, batch: int = 5000) -> int:
    """Roll up, then delete raw rows older than B24_CALL_LOG_RETENTION_DAYS (in batches, to keep locks
    short), and roll-ups older than B24_CALL_LOG_DAILY_RETENTION_DAYS. Returns raw rows deleted."""
    now = now or timezone.now()
    keep_days = int(settings.B24_CALL_LOG_RETENTION_DAYS)
    cutoff = now - timedelta(days=keep_days)
    oldest = RestCall.objects.filter(created_at__lt=cutoff).order_by("created_at").values_list(
        "created_at", flat=True).first()
    oldest_count = RestCallCount.objects.filter(day__lt=timezone.localdate(cutoff)).order_by("day").values_list(
        "day", flat=True).first()
    days = [d for d in (oldest and timezone.localdate(oldest), oldest_count) if d is not None]
    if days:
        day = min(days)
        while day <= timezone.localdate(cutoff):
            rollup_day(day)
            day += timedelta(days=1)
    deleted = 0
    while True:
        ids = list(RestCall.objects.filter(created_at__lt=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            break
        deleted += RestCall.objects.filter(id__in=ids).delete()[0]
    RestCallCount.objects.filter(day__lt=timezone.localdate(cutoff)).delete()  # rolled up above
    daily_days = int(settings.B24_CALL_LOG_DAILY_RETENTION_DAYS)
    RestCallDaily.objects.filter(day__lt=timezone.localdate(now) - timedelta(days=daily_days)).delete()
    return deleted


# -- the chart ------------------------------------------------------------------------------------------
OK_COLOUR = "#27ae60"


def chart_data(rows: Iterable[Mapping[str, Any]], *, days: int = 30, today: date | None = None) -> list[ChartDay]:
    """Rows of {day, error_code, calls} → one ChartDay per day of the last `days` days (gaps are zero)."""
    return daily_series(rows, key="error_code", value="calls", days=days, today=today)


def chart_svg(days: list[ChartDay], *, width: int = 900, height: int = 240) -> SafeString:
    """Calls per day stacked by outcome: successes green, each error code its own colour."""
    return stacked_bars_svg(days, title="REST calls and errors per day", colours={"": OK_COLOUR}, order=[""],
                            labels={"": "ok"}, width=width, height=height)
