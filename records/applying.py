"""Applying a portal's owed jobs to its CRM: claim, batch, settle, reply.

One round (`apply_round`) claims up to 50 *groups* of the portal's due jobs, in job order, and sends
them as one `batch` (one REST request, one limiter permit):

- per record in order: a record with an unfinished earlier job (running, or waiting for a retry) waits;
  a create is sent alone (its record's updates wait for it); consecutive updates and moves of one record
  coalesce into one `crm.lead.update`;
- an update that changes a PHONE / EMAIL first reads the lead (one `crm.lead.get` batch for the round) and
  replaces the value we wrote by its ID; values a person added stay, a value already there is not sent again;
- a lead is created with ORIGINATOR_ID / ORIGIN_ID; a create tried before (its answer may have been lost:
  a timeout, a 5xx, a worker that died) first looks the lead up by them with `crm.lead.list`, so it is found
  and not added twice;
- transient failures (limits, 5xx, timeouts, an answer that never came) put the jobs back with back-off
  until their deadline; permanent ones fail the job with Bitrix24's reason. Every finished job queues
  its replies.

Claims are made under a per-portal advisory lock, so two workers never take jobs of one record out of order.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from oauth.client import BATCH_LIMIT, PortalClient, retry_delay
from oauth.errors import B24BadResponse, B24Error, B24RetryLater, B24TransientError, B24TransportError
from tenants.models import Portal

from .channels import own_write_params
from .leads import (
    MULTIFIELDS,
    lead_fields,
    merged_payload,
    origin_fields,
    own_multifield,
    own_multifields,
    replacing_multifield,
    without_repeated_multifields,
)
from .models import Outcome, Record, StageMapping, SyncJob
from .replies import do_queue_replies, job_reply_body

logger = logging.getLogger(__name__)

# Jobs looked at per claim: enough to fill a batch past records that wait.
CLAIM_WINDOW = 2000
ADVISORY_LOCK_NAMESPACE = 0x5245  # "RE": records' per-portal claim lock
# Our own limiter refused before anything was sent: the attempt does not count.
NOT_SENT_CODES = frozenset({"RATE_LIMIT_WAIT", "OPERATING_DEFERRED"})
# A 500 on a write may have acted; for us that is retryable (creates are found by ORIGIN_ID, updates repeat).
TRANSIENT_WRITE_CODES = frozenset({"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"})


@dataclass
class Group:
    """The jobs of one record sent as one command."""

    record_id: int
    job_ids: list[int] = field(default_factory=list)
    jobs: list[SyncJob] = field(default_factory=list)
    sent_fields: dict[str, Any] = field(default_factory=dict)  # what the command writes to the lead
    current_multifields: dict[str, list[Any]] | None = None  # the lead's PHONE / EMAIL read before an update
    multifield_ids: dict[str, str] = field(default_factory=dict)  # the IDs of our multi-field values

    @property
    def first(self) -> SyncJob:
        return self.jobs[0]


@dataclass
class RoundResult:
    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    retrying: int = 0
    retry_after: float | None = None  # the whole request failed (a limit, an outage): pause this portal


def worth_retrying(exc: B24Error) -> bool:
    return (exc.retryable or isinstance(exc, B24TransportError | B24BadResponse)
            or exc.code in TRANSIENT_WRITE_CODES or (exc.http_status or 0) >= 500)


def describe(exc: B24Error) -> str:
    return (f"{exc.code}: {exc.description}" if exc.code and exc.description else exc.code or exc.description
            or type(exc).__name__)[:450]


def _lock_portal(portal_id: int) -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [ADVISORY_LOCK_NAMESPACE, portal_id])


def claim_groups(portal: Portal, now: datetime, limit: int = BATCH_LIMIT) -> list[Group]:
    """Take (pending → running) the next due jobs of the portal, grouped per record, at most `limit` groups."""
    with transaction.atomic():
        _lock_portal(portal.pk)
        rows = (SyncJob.objects.filter(portal=portal, state__in=[SyncJob.State.PENDING, SyncJob.State.RUNNING])
                .order_by("id").values_list("id", "record_id", "action", "state", "next_attempt_at")[:CLAIM_WINDOW])
        blocked: set[int] = set()
        groups: dict[int, Group] = {}
        actions: dict[int, str] = {}
        for job_id, record_id, action, state, due in rows:
            if record_id in blocked:
                continue
            if state == SyncJob.State.RUNNING or (due is not None and due > now):
                blocked.add(record_id)  # its later jobs wait for it
                continue
            group = groups.get(record_id)
            if group is None:
                if len(groups) >= limit:
                    blocked.add(record_id)
                    continue
                groups[record_id] = Group(record_id, [job_id])
                actions[record_id] = action
            elif actions[record_id] == SyncJob.Action.CREATE or action == SyncJob.Action.CREATE:
                blocked.add(record_id)  # a create goes alone: what follows waits for its lead id
            else:
                group.job_ids.append(job_id)
        ids = [job_id for group in groups.values() for job_id in group.job_ids]
        if ids:
            SyncJob.objects.filter(pk__in=ids, state=SyncJob.State.PENDING).update(
                state=SyncJob.State.RUNNING, attempts=F("attempts") + 1, claimed_at=now)
    if not groups:
        return []
    jobs = {job.pk: job for job in SyncJob.objects.filter(pk__in=ids, state=SyncJob.State.RUNNING, claimed_at=now)
            .select_related("record", "api_key")}
    claimed = []
    for group in groups.values():
        if all(pk in jobs for pk in group.job_ids):
            group.jobs = [jobs[pk] for pk in group.job_ids]
            claimed.append(group)
        else:  # staff cancelled one of them meanwhile: leave the record for the next round
            SyncJob.objects.filter(pk__in=[pk for pk in group.job_ids if pk in jobs]).update(
                state=SyncJob.State.PENDING, claimed_at=None, attempts=F("attempts") - 1)
    return claimed


def stage_map(portal: Portal) -> dict[str, str]:
    return dict(StageMapping.objects.filter(portal=portal).values_list("external_stage", "status_id"))


def _lookup_key(group: Group) -> str:
    return f"find{group.record_id}"


def _command_key(group: Group) -> str:
    return f"rec{group.record_id}"


def _read_key(group: Group) -> str:
    return f"read{group.record_id}"


def apply_round(portal: Portal, client: PortalClient | None = None) -> RoundResult:
    """Claim, send one batch, settle. Returns what happened (claimed 0: nothing due)."""
    now = timezone.now()
    groups = claim_groups(portal, now)
    result = RoundResult(claimed=sum(len(g.jobs) for g in groups))
    if not groups:
        return result
    client = client or PortalClient(portal)
    mapping = stage_map(portal)
    own_writes = own_write_params(portal.pk)  # offline events: our writes do not come back (records.offline)
    try:
        _find_lost_creates(portal, client, groups, result)
        _read_multifields(client, groups)
        commands: dict[str, tuple[str, dict[str, Any]]] = {}
        for group in list(groups):
            command = _command(group, mapping)
            if command is None:
                _fail(group, "the record has no Bitrix24 lead (its create failed or was cancelled)", result)
                groups.remove(group)
                continue
            commands[_command_key(group)] = (command[0], {**command[1], **own_writes})
        if commands:
            answer = client.batch(commands)
    except B24Error as exc:
        # The whole request failed: nothing or everything may have happened; all of them try again.
        for group in groups:
            _settle_error(group, exc, result, whole=True)
        return result
    except Exception as exc:  # e.g. no usable token: keep the jobs owed (until their deadline), not stuck running
        logger.exception("records batch failed unexpectedly", extra={"portal": portal.pk})
        failure = B24TransientError("INTERNAL", f"{type(exc).__name__}: {str(exc)[:200]}")
        for group in groups:
            _settle_error(group, failure, result, whole=True)
        return result
    if not commands:
        return result
    for group in groups:
        key = _command_key(group)
        if key in answer.results:
            _succeed(group, answer.results[key], result)
        else:
            _settle_error(group, answer.errors.get(key) or B24BadResponse(
                "the batch answer has no result for this command", http_status=200, method="batch"), result)
    return result


def _find_lost_creates(portal: Portal, client: PortalClient, groups: list[Group], result: RoundResult) -> None:
    """A create tried before may have added its lead already: look it up by ORIGINATOR_ID / ORIGIN_ID."""
    suspects = [g for g in groups if g.first.action == SyncJob.Action.CREATE and g.first.record.lead_id is None
                and g.first.attempts > 1]
    if not suspects:
        return
    lookups = {_lookup_key(g): ("crm.lead.list", {"filter": origin_fields(g.first.record.external_id),
                                                  "select": ["ID"], "order": {"ID": "ASC"}}) for g in suspects}
    answer = client.batch(lookups)
    for group in suspects:
        key = _lookup_key(group)
        if key in answer.errors:
            _settle_error(group, answer.errors[key], result)
            groups.remove(group)
            continue
        rows = answer.results.get(key) or []
        if isinstance(rows, dict):
            rows = list(rows.values())
        ids = sorted(int(row["ID"]) for row in rows if isinstance(row, dict) and str(row.get("ID", "")).isdigit())
        if ids:
            record = group.first.record
            record.lead_id = ids[0]
            Record.objects.filter(pk=record.pk, lead_id__isnull=True).update(lead_id=ids[0])
            logger.info("lead of a retried create found by ORIGIN_ID", extra={"record": record.pk, "lead": ids[0]})


def _read_multifields(client: PortalClient, groups: list[Group]) -> None:
    """Multi-field values are replaced by their ID: read the PHONE / EMAIL of each lead whose update changes
    one (at most one `crm.lead.get` per group, so one batch). A read that fails leaves the update as it was."""
    readers = []
    for group in groups:
        record = group.first.record
        payload = merged_payload([job.payload for job in group.jobs])
        if record.lead_id is not None and ("phone" in payload or "email" in payload):
            readers.append(group)
    if not readers:
        return
    answer = client.batch({_read_key(g): ("crm.lead.get", {"id": g.first.record.lead_id}) for g in readers})
    for group in readers:
        lead = answer.results.get(_read_key(group))
        if isinstance(lead, dict):
            group.current_multifields = {name: list(_as_items(lead.get(name))) for name in MULTIFIELDS}


def _as_items(value: Any) -> list[Any]:
    if isinstance(value, dict):  # a PHP-encoded list
        return list(value.values())
    return value if isinstance(value, list) else []


def _command(group: Group, mapping: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
    record = group.first.record
    payload = merged_payload([job.payload for job in group.jobs])
    fields = group.sent_fields = lead_fields(payload, mapping)
    if group.first.action == SyncJob.Action.CREATE and record.lead_id is None:
        return "crm.lead.add", {"fields": {**fields, **origin_fields(record.external_id)},
                                "params": {"REGISTER_SONET_EVENT": "N"}}
    if record.lead_id is None:
        return None
    if group.current_multifields is None:
        fields = without_repeated_multifields(fields, record.last_written)
    else:
        fields = dict(fields)
        for name in MULTIFIELDS:
            if name in fields:
                entries, our_id = replacing_multifield(fields[name][0], group.current_multifields[name],
                                                       own_multifield(name, record.own_multifields,
                                                                      record.last_written))
                if our_id:
                    group.multifield_ids[name] = our_id
                if entries is None:
                    del fields[name]
                else:
                    fields[name] = entries
    return "crm.lead.update", {"id": record.lead_id, "fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}}


def _finish(group: Group, state: str, *, lead_id: int | None, error: str, result: RoundResult) -> None:
    now = timezone.now()
    record = group.first.record
    with transaction.atomic():
        SyncJob.objects.filter(pk__in=group.job_ids, state=SyncJob.State.RUNNING).update(
            state=state, lead_id=lead_id, last_error=error, claimed_at=None, next_attempt_at=None, finished_at=now)
        record_changes: dict[str, Any] = {"last_outcome": Outcome.SUCCESS if not error else Outcome.ERROR,
                                          "last_error": error, "updated_at": now}
        if state == SyncJob.State.SUCCEEDED:
            payload = merged_payload([job.payload for job in group.jobs])
            written = {**record.last_written, **group.sent_fields}
            record_changes.update(lead_id=lead_id, last_written=written, last_written_at=now,
                                  own_multifields=own_multifields(group.sent_fields, record.own_multifields,
                                                                  group.multifield_ids))
            if "stage" in payload:
                record_changes["stage"] = payload["stage"]
        Record.objects.filter(pk=record.pk).update(**record_changes)
        for field_name, value in record_changes.items():
            setattr(record, field_name, value)
        for job in group.jobs:
            job.state, job.lead_id, job.last_error, job.finished_at = state, lead_id, error, now
            do_queue_replies(job, record, job_reply_body(job))


def _succeed(group: Group, answer: Any, result: RoundResult) -> None:
    record = group.first.record
    lead_id = record.lead_id
    if lead_id is None:  # crm.lead.add answers the new id
        try:
            lead_id = int(answer)
        except (TypeError, ValueError):
            _settle_error(group, B24BadResponse(f"crm.lead.add answered {str(answer)[:50]!r}", http_status=200,
                                                method="crm.lead.add"), result)
            return
    _finish(group, SyncJob.State.SUCCEEDED, lead_id=lead_id, error="", result=result)
    result.succeeded += len(group.jobs)


def _fail(group: Group, reason: str, result: RoundResult) -> None:
    _finish(group, SyncJob.State.FAILED, lead_id=group.first.record.lead_id, error=reason[:500], result=result)
    result.failed += len(group.jobs)


def _settle_error(group: Group, exc: B24Error, result: RoundResult, *, whole: bool = False) -> None:
    now = timezone.now()
    reason = describe(exc)
    if not worth_retrying(exc):
        _fail(group, reason, result)
        return
    if any(job.deadline <= now for job in group.jobs):
        _fail(group, f"gave up at the deadline: {reason}", result)
        return
    attempts = max(job.attempts for job in group.jobs)
    not_sent = whole and exc.code in NOT_SENT_CODES
    delay = retry_delay(exc, attempts - 1)
    if isinstance(exc, B24RetryLater) and exc.retry_after:
        delay = max(delay, float(exc.retry_after))
    SyncJob.objects.filter(pk__in=group.job_ids, state=SyncJob.State.RUNNING).update(
        state=SyncJob.State.PENDING, claimed_at=None, last_error=f"retrying: {reason}"[:500],
        next_attempt_at=now + timedelta(seconds=delay),
        **({"attempts": F("attempts") - 1} if not_sent else {}))
    result.retrying += len(group.jobs)
    if whole:
        result.retry_after = delay if result.retry_after is None else min(result.retry_after, delay)


def do_release_stale_claims(now: datetime | None = None) -> int:
    """Jobs a worker claimed and never settled (it died mid-batch) go back to pending; their next attempt
    counts as a retry, so a create looks its lead up by ORIGIN_ID before adding it."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.RECORDS_CLAIM_TIMEOUT_SECONDS)
    return SyncJob.objects.filter(state=SyncJob.State.RUNNING, claimed_at__lt=cutoff).update(
        state=SyncJob.State.PENDING, claimed_at=None, next_attempt_at=now,
        last_error="the worker stopped while applying it; trying again")


def do_retry_jobs(jobs: Iterable[SyncJob]) -> list[int]:
    """Staff: failed or cancelled jobs become pending again with a fresh deadline. Returns their portals."""
    now = timezone.now()
    ids = [job.pk for job in jobs if job.state in (SyncJob.State.FAILED, SyncJob.State.CANCELLED)]
    SyncJob.objects.filter(pk__in=ids).update(
        state=SyncJob.State.PENDING, next_attempt_at=now, finished_at=None, last_error="",
        deadline=now + timedelta(minutes=settings.RECORDS_JOB_DEADLINE_MINUTES))
    return sorted(set(SyncJob.objects.filter(pk__in=ids).values_list("portal_id", flat=True)))


def do_cancel_jobs(jobs: Iterable[SyncJob]) -> int:
    """Staff: pending jobs are cancelled (a running one is left to finish); each cancelled job replies."""
    cancelled = 0
    for job in jobs:
        if job.state != SyncJob.State.PENDING:
            continue
        with transaction.atomic():
            done = SyncJob.objects.filter(pk=job.pk, state=SyncJob.State.PENDING).update(
                state=SyncJob.State.CANCELLED, finished_at=timezone.now(), next_attempt_at=None,
                last_error="cancelled by staff")
            if done:
                job.refresh_from_db()
                do_queue_replies(job, job.record, job_reply_body(job))
                cancelled += 1
    return cancelled
