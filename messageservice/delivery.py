"""Delivery status: poll the carriers, move each message forward only, push changes to Bitrix24.

Poll (beat → `dispatch_status_polls` → `poll_account` per provider account): messages not final whose
`next_poll_at` is due, in chunks of the carrier's batch size (SMS.ru and SMSC take id lists; Twilio one
per call), each message with its own exponential backoff. A request-level carrier error backs off the
whole chunk and is never mapped onto messages. After `SMS_STATUS_TTL_HOURS` a message gets a final
status by the TTL policy below.

Push (beat → `dispatch_status_pushes` → `push_portal_statuses` per portal): statuses that changed since
the last push go to Bitrix24 as `messageservice.message.status.update` in `batch` calls of up to 50,
with the portal's service (admin) token — Bitrix24 requires an admin to update other users' messages —
through the shared rate limiter. Only forward transitions are ever sent (queued < sent < final), because
Bitrix24 itself would let a late `sent` overwrite `delivered`.

TTL policy (documented in the README): when a message is still not final after the TTL,
- last status `sent` (the operator took it; no delivery report came) → `SMS_TTL_SENT_BECOMES`
  (default `sent`, i.e. it stays sent and polling stops: like Twilio, we treat "sent" as final on routes
  without delivery reports instead of claiming a delivery we never saw);
- last status `queued` or none (the carrier never confirmed handing it on) → `undelivered`.

Both loops read rows in bounded chunks (never all rows), so memory stays flat however long the queue is.
"""

from __future__ import annotations

import logging
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from celery import Task, shared_task
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from b24portal.logging import log_context
from messageservice.carriers import CarrierError, StatusResult
from messageservice.models import Message, ProviderAccount
from messageservice.status import FINAL, DeliveryStatus, is_forward
from oauth.client import PortalClient
from oauth.errors import B24AuthError, B24Error
from oauth.retry import retry_delay, retry_if_worth_it
from tenants.journal import journal
from tenants.models import JournalEntry, Portal
from tenants.schedule import chunks

logger = logging.getLogger(__name__)

COMMAND = "messageservice.message.status.update"
BATCH_SIZE = 50
LOCK_SECONDS = 300
#: due portals/accounts per dispatcher tick, and per chunk task
DISPATCH_LIMIT = 5000
DISPATCH_CHUNK = 50


def _poll_delay(attempts: int) -> timedelta:
    seconds = min(settings.SMS_POLL_BASE_SECONDS * 2 ** min(attempts, 16), settings.SMS_POLL_MAX_SECONDS)
    return timedelta(seconds=seconds * random.uniform(1.0, 1.25))


def _reschedule(pks: Iterable[int], when: datetime) -> None:
    Message.objects.filter(pk__in=list(pks)).update(next_poll_at=when, poll_attempts=F("poll_attempts") + 1)


# -- poll ------------------------------------------------------------------------------------------------
@shared_task
def dispatch_status_polls() -> int:
    """Beat: the provider accounts with due messages (through the partial index sms_msg_poll_due, with a
    limit), enqueued `DISPATCH_CHUNK` accounts per task; returns how many accounts. Each account is claimed
    in the chunk task (`sms:poll:<id>`), so overlapping ticks or chunks never poll one account twice."""
    now = timezone.now()
    account_ids = list(Message.objects.filter(next_poll_at__lte=now).order_by()
                       .values_list("account_id", flat=True).distinct()[:DISPATCH_LIMIT])
    for chunk in chunks(account_ids, DISPATCH_CHUNK):
        poll_accounts.delay(chunk)
    return len(account_ids)


@shared_task
def poll_accounts(account_ids: list[int]) -> dict[str, int]:
    """Poll many accounts in one task (one query loads them), each under its own claim."""
    outcomes: Counter[str] = Counter()
    accounts = ProviderAccount.objects.select_related("portal").in_bulk(account_ids)
    for account_id in account_ids:
        account = accounts.get(account_id)
        outcomes["gone" if account is None else _poll_claimed(account)] += 1
    return dict(outcomes)


@shared_task(bind=True, max_retries=None)
def poll_account(self: Task, account_id: int) -> str:
    return _poll_claimed(ProviderAccount.objects.select_related("portal").get(pk=account_id))


def _poll_claimed(account: ProviderAccount) -> str:
    lock = f"sms:poll:{account.pk}"
    if not cache.add(lock, 1, LOCK_SECONDS):
        return "busy"
    try:
        with log_context(member_id=account.portal.member_id, account=account.code):
            return _poll_account(account)
    finally:
        cache.delete(lock)


def _poll_account(account: ProviderAccount) -> str:
    now = timezone.now()
    carrier = account.get_carrier()
    min_interval = type(carrier).status_min_interval
    if min_interval:
        # Carriers that block frequent status requests (SMSC) get one poll per interval per account.
        if not cache.add(f"sms:poll-interval:{account.pk}", 1, min_interval):
            return "interval"
    rows = list(
        Message.objects.filter(account=account, next_poll_at__lte=now).order_by("next_poll_at")
        .values("pk", "carrier_message_id", "status", "poll_attempts", "sent_at", "created_at", "origin")
        [: settings.SMS_POLL_CHUNK]
    )
    if not rows:
        return "nothing due"
    ttl_cutoff = now - timedelta(hours=settings.SMS_STATUS_TTL_HOURS)
    expired = [r for r in rows if (r["sent_at"] or r["created_at"]) <= ttl_cutoff]
    expired_pks = {r["pk"] for r in expired}
    live = [r for r in rows if r["pk"] not in expired_pks and r["carrier_message_id"]]
    _apply_ttl_policy(expired, now)
    orphans = [r["pk"] for r in rows if r["pk"] not in expired_pks and not r["carrier_message_id"]]
    if orphans:  # nothing to ask the carrier about (should not happen once sent): stop polling them
        Message.objects.filter(pk__in=orphans).update(next_poll_at=None)

    moved = 0
    try:
        results = carrier.fetch_statuses([r["carrier_message_id"] for r in live])
    except CarrierError as exc:
        partial = exc.partial_results
        moved += _apply_results(live, partial, now, type(carrier).not_found_codes)
        pending = [r["pk"] for r in live if r["carrier_message_id"] not in partial]
        # A carrier that says how long to wait is believed; otherwise at least one poll period.
        seconds = max(exc.retry_after or 0, settings.SMS_POLL_BASE_SECONDS) if exc.retryable else settings.SMS_POLL_MAX_SECONDS
        delay = timedelta(seconds=seconds)
        _reschedule(pending, now + delay)
        level = "warning" if exc.retryable else "error"
        logger.warning("status poll failed", extra={"error": str(exc), "retryable": exc.retryable})
        if not exc.retryable:
            journal(account.portal, JournalEntry.Kind.MESSAGE,
                    f"status poll of sender {account.code} refused by {account.get_carrier_display()}: {exc}",
                    level=level, details={"account": account.pk, "code": getattr(exc, "code", None)})
        return "carrier error"
    moved += _apply_results(live, results, now, type(carrier).not_found_codes)
    if moved:
        dispatch_on_commit(push_portal_statuses, account.portal_id)
    if len(rows) >= settings.SMS_POLL_CHUNK:
        poll_account.delay(account.pk)  # more are due: continue in a fresh task (bounded memory)
    return f"polled {len(live)}, moved {moved}"


def _apply_results(rows: Sequence[Mapping[str, Any]], results: Mapping[str, StatusResult], now: datetime,
                   not_found_codes: frozenset[str]) -> int:
    """Apply a chunk's carrier answers with a handful of grouped UPDATEs in one transaction, so the pusher
    sees the whole chunk at once (full batches of 50) and the database is not asked once per message."""
    grace = timedelta(seconds=settings.SMS_NOT_FOUND_GRACE_SECONDS)
    moves: dict[tuple[str, str, str, int], list[int]] = defaultdict(list)
    unchanged: dict[int, list[int]] = defaultdict(list)  # poll_attempts -> pks (each keeps its own backoff)
    for row in rows:
        result = results.get(row["carrier_message_id"])
        status = result.status if result is not None else None
        if result is not None and result.raw_status in not_found_codes and \
                (row["sent_at"] or row["created_at"]) > now - grace:
            status = None  # the carrier may not have indexed a just-sent message yet
        if result is not None and status is not None and is_forward(row["status"], status):
            moves[(status, result.raw_status, result.error or "", row["poll_attempts"])].append(row["pk"])
        else:
            unchanged[row["poll_attempts"]].append(row["pk"])
    moved = 0
    with transaction.atomic():
        for (new_status, raw, error, attempts), pks in moves.items():
            moved += Message.objects.filter(pk__in=pks).advance_status(
                new_status, raw_status=raw, error=error or None, now=now,
                extra={"next_poll_at": now + _poll_delay(attempts), "poll_attempts": F("poll_attempts") + 1})
        for attempts, pks in unchanged.items():
            _reschedule(pks, now + _poll_delay(attempts))
    return moved


def _apply_ttl_policy(rows: Sequence[Mapping[str, Any]], now: datetime) -> None:
    for row in rows:
        if row["status"] == DeliveryStatus.SENT:
            final = settings.SMS_TTL_SENT_BECOMES
        elif row["status"] in FINAL:
            final = row["status"]
        else:
            final = DeliveryStatus.UNDELIVERED
        if final != row["status"]:
            Message.objects.filter(pk=row["pk"]).advance_status(final, raw_status="ttl-expired", now=now)
        Message.objects.filter(pk=row["pk"]).update(next_poll_at=None, final_at=now,
                                                    last_error="no delivery report within the TTL")


# -- push ------------------------------------------------------------------------------------------------
def due_push_portals(limit: int) -> list[int]:
    """Portals with statuses Bitrix24 has not been told yet, at most `limit`: on PostgreSQL a skip scan of
    the partial index sms_msg_push_due (one index probe per due portal, however many rows each has)."""
    if connection.vendor != "postgresql":
        return list(Message.objects.filter(push_due=True).order_by("portal_id")
                    .values_list("portal_id", flat=True).distinct()[:limit])
    table = Message._meta.db_table
    sql = (f"WITH RECURSIVE p(id) AS ((SELECT portal_id FROM {table} WHERE push_due ORDER BY portal_id LIMIT 1) "  # noqa: S608 (our table)
           f"UNION ALL SELECT (SELECT portal_id FROM {table} WHERE push_due AND portal_id > p.id "
           f"ORDER BY portal_id LIMIT 1) FROM p WHERE p.id IS NOT NULL) "
           f"SELECT id FROM p WHERE id IS NOT NULL LIMIT %s")
    with connection.cursor() as cursor:
        cursor.execute(sql, [limit])
        return [row[0] for row in cursor.fetchall()]


@shared_task
def dispatch_status_pushes() -> int:
    """Beat: the portals with statuses to push (an index skip scan with a limit), enqueued
    `DISPATCH_CHUNK` portals per task; returns how many portals. Each portal is claimed in the chunk task
    (`sms:push:<id>`), so overlapping ticks or chunks never push one portal twice."""
    portal_ids = due_push_portals(DISPATCH_LIMIT)
    for chunk in chunks(portal_ids, DISPATCH_CHUNK):
        push_statuses.delay(chunk)
    return len(portal_ids)


@shared_task
def push_statuses(portal_ids: list[int]) -> dict[str, int]:
    """Push many portals' statuses in one task (one query loads the portals), each under its own claim. A
    retryable Bitrix24 error hands that portal to `push_portal_statuses` with the usual retry delay."""
    outcomes: Counter[str] = Counter()
    portals = Portal.objects.in_bulk(portal_ids)
    for portal_id in portal_ids:
        portal = portals.get(portal_id)
        outcomes["gone" if portal is None else _push_claimed(portal, None).split(" ")[0]] += 1
    return dict(outcomes)


@shared_task(bind=True, max_retries=None)
def push_portal_statuses(self: Task, portal_id: int) -> str:
    return _push_claimed(Portal.objects.get(pk=portal_id), self)


def _push_claimed(portal: Portal, task: Task | None) -> str:
    portal_id = portal.pk
    if not portal.is_operational:
        return f"portal {portal.status}"  # statuses wait; they are pushed once it is active again
    lock = f"sms:push:{portal_id}"
    if not cache.add(lock, 1, LOCK_SECONDS):
        return "busy"
    try:
        with log_context(member_id=portal.member_id):
            pushed, more = _push_portal(portal)
    except B24AuthError as exc:
        journal(portal, JournalEntry.Kind.MESSAGE, f"status push stopped: {exc.code}", level="error")
        return "auth error"
    except B24Error as exc:
        if task is not None:
            retry_if_worth_it(task, exc)  # max_retries=None: a retryable error retries until it clears
        elif exc.retryable:
            push_portal_statuses.apply_async(args=(portal_id,), countdown=retry_delay(exc, 0))
            return "retrying"
        journal(portal, JournalEntry.Kind.MESSAGE, f"status push failed: {exc.code} {exc.description}",
                level="error")
        return "error"
    finally:
        cache.delete(lock)
    if more:
        push_portal_statuses.delay(portal_id)
    return f"pushed {pushed}"


def _push_portal(portal: Portal) -> tuple[int, bool]:
    """Push up to SMS_PUSH_BATCHES_PER_RUN batches. Each message is tried at most once per run: one that
    Bitrix24 answered with a transient per-command error stays due for the next run (the beat comes back
    in seconds) instead of being sent again and again in a tight loop."""
    client = PortalClient(portal)
    pushed = 0
    tried: list[int] = []
    for _ in range(settings.SMS_PUSH_BATCHES_PER_RUN):
        rows = list(
            Message.objects.filter(portal=portal, push_due=True).exclude(pk__in=tried).order_by("status_changed_at")
            .values("pk", "message_id", "status", "pushed_status", "origin", "account__code", "push_attempts")
            [:BATCH_SIZE]
        )
        if not rows:
            return pushed, False
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        silent: list[Outcome] = []
        for row in rows:
            if row["origin"] in Message.BITRIX24_ORIGINS and row["status"] and is_forward(
                row["pushed_status"] or None, row["status"]
            ):
                commands[f"m{row['pk']}"] = (COMMAND, {"CODE": row["account__code"], "MESSAGE_ID": row["message_id"],
                                                       "STATUS": row["status"]})
            else:  # nothing Bitrix24 should hear: a backward move, or a message Bitrix24 never had
                silent.append(Outcome(row["pk"], "silent", row["status"]))
        tried.extend(row["pk"] for row in rows)
        if not commands:
            _write_outcomes(silent, timezone.now())
            continue
        result = client.batch(commands)  # a whole-request failure raises (rate limit → the task retries)
        pushed += _record_push_results(portal, rows, result, silent)
    return pushed, True


class Outcome(NamedTuple):
    """What one push did to one message (see `_write_outcomes`)."""

    pk: int
    kind: str  # pushed | silent (nothing to tell) | not_found | refused
    status: str | None = None  # the status pushed (pushed, silent: cleared only if the row still has it)
    attempts: int = 0  # refused: push attempts so far
    due: bool = False  # refused: whether to try again
    error: str = ""  # not_found, refused: last_error


# One statement for a whole batch, whatever each message's outcome (a CTE of VALUES joined on the primary
# key; PostgreSQL and SQLite ≥ 3.33 alike). "Still the status we pushed?" is decided per row inside it: if
# the status moved on meanwhile, the message stays due. Only constants and placeholders are formatted in.
_SAME = "(m.status = v.status OR (m.status IS NULL AND v.status IS NULL))"
_OUTCOMES_SQL = f"""
WITH v(id, kind, status, attempts, due, error) AS (VALUES {{values}})
UPDATE {Message._meta.db_table} AS m SET
    pushed_status = CASE WHEN v.kind = 'pushed' THEN v.status ELSE m.pushed_status END,
    pushed_at = CASE WHEN v.kind = 'pushed' THEN %s ELSE m.pushed_at END,
    push_due = CASE WHEN v.kind IN ('pushed', 'silent') THEN (CASE WHEN {_SAME} THEN false ELSE m.push_due END)
                    ELSE v.due END,
    push_attempts = CASE WHEN v.kind = 'pushed' AND {_SAME} THEN 0
                         WHEN v.kind = 'refused' THEN v.attempts ELSE m.push_attempts END,
    last_error = CASE WHEN v.kind IN ('not_found', 'refused') THEN v.error ELSE m.last_error END
FROM v WHERE m.id = v.id
"""  # noqa: S608 (the table name and fixed fragments; every value is a placeholder)
_OUTCOME_ROW = "(CAST(%s AS integer), %s, %s, CAST(%s AS integer), CAST(%s AS boolean), %s)"


def _write_outcomes(outcomes: Sequence[Outcome], now: datetime) -> int:
    if not outcomes:
        return 0
    sql = _OUTCOMES_SQL.format(values=", ".join([_OUTCOME_ROW] * len(outcomes)))
    params: list[Any] = [value for outcome in outcomes for value in outcome]
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, now])
        return cursor.rowcount


def _record_push_results(portal: Portal, rows: Sequence[Mapping[str, Any]], result: Any,
                         silent: Sequence[Outcome] = ()) -> int:
    """Write what Bitrix24 answered for one batch, in one UPDATE for all its messages."""
    now = timezone.now()
    outcomes: list[Outcome] = list(silent)
    not_found: list[str] = []
    refused: list[str] = []
    pushed = 0
    for row in rows:
        key = f"m{row['pk']}"
        if key in result.results:
            outcomes.append(Outcome(row["pk"], "pushed", row["status"]))
            pushed += 1
        elif key in result.errors:
            error = result.errors[key]
            if error.code == "ERROR_MESSAGE_NOT_FOUND":
                outcomes.append(Outcome(row["pk"], "not_found", error="Bitrix24: message not found"))
                not_found.append(row["message_id"])
            elif error.retryable:
                continue  # stays due; the next run (not this one) tries again
            else:
                attempts = row["push_attempts"] + 1
                give_up = attempts >= settings.SMS_PUSH_MAX_ATTEMPTS
                outcomes.append(Outcome(row["pk"], "refused", attempts=attempts, due=not give_up,
                                        error=f"Bitrix24 refused status {row['status']}: {error.code}"[:500]))
                if give_up:
                    refused.append(f"{row['message_id']} ({error.code})")
    _write_outcomes(outcomes, now)
    # One journal line per batch, not per message: a portal that deleted its messages must not flood it.
    if not_found:
        journal(portal, JournalEntry.Kind.MESSAGE,
                f"Bitrix24 does not know {len(not_found)} message(s); their status is no longer pushed",
                level="warning", details={"message_ids": not_found[:50]})
    if refused:
        journal(portal, JournalEntry.Kind.MESSAGE, f"Bitrix24 kept refusing the status of {len(refused)} message(s)",
                level="error", details={"messages": refused[:50]})
    return pushed
