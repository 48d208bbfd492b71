"""Changes made in Bitrix24 flow back: offline events for leads (installed-app portals only).

Install step `crm_offline_events`: when `feature.get rest_offline_extended` says Y (the capabilities step
ran first and stored it), ONCRMLEADUPDATE and ONCRMLEADDELETE are bound as offline events
(`event.bind event_type=offline`), with our `auth_connector` (RECORDS_ORIGINATOR_ID) when the portal has
`rest_auth_connector`, and verified with `event.get`. The portal's `OfflineFeed` row says what happened:
unavailable or failed with the reason (shown in admin and the step's report; the install goes on: everything
else works without it), or bound.

Polling: a beat tick claims the portals whose "offline_events" check is due (tenants.schedule: due times,
SKIP LOCKED, many portals per task on the maintenance queue). For each bound portal:

1. `event.offline.get clear=0` with the feed's `process_id` (the same one every time: events a run claimed
   and did not acknowledge, because it died, are claimed again by the next run; any other caller gets
   other events);
2. the changed leads that belong to a Record are read in one batch of `crm.lead.get`; a lead whose fields
   differ from what we last wrote to it (`Record.last_written`) was moved or edited by someone else: the
   Record takes the new state and a `card_changed` reply is queued (`records.replies.do_queue_replies`, to the
   record's reply queue and/or callback) in one transaction. A lead that equals our last write is our own
   write coming back (portals without `rest_auth_connector`; with it, Bitrix24 does not record our writes);
   a deleted lead queues `card_deleted`;
3. one batch acknowledges: `event.offline.error` for the events that failed (kept by Bitrix24 for staff,
   counted in the feed), `event.offline.clear` by `process_id` for the processed ones. An event of a record
   with a job still being applied is left claimed (not cleared) and read again on the next run, so a
   person's edit made during our write is compared with our final write.

A run that dies after queueing replies but before the clear reads the same events again; the records
already hold the new state, so no reply is queued twice.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from installs.steps import install_step
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.models import PortalCapabilities
from oauth.periodic import dispatch_due, run_for_each
from tenants import schedule
from tenants.journal import journal
from tenants.models import Portal

from .channels import OfflineFeed, own_write_params  # noqa: F401  (re-exported)
from .models import Record, StageMapping, SyncJob
from .replies import do_queue_replies

logger = logging.getLogger(__name__)

OFFLINE_EVENTS = ("ONCRMLEADUPDATE", "ONCRMLEADDELETE")
OFFLINE_CHECK = "offline_events"
PAGE = 50  # event.offline.get's default and a batch's size
PAGES_PER_RUN = 10  # a portal with more waiting is due again at once


# -- binding at install ---------------------------------------------------------------------------------


def _features(portal: Portal) -> dict[str, bool]:
    caps = PortalCapabilities.objects.filter(portal=portal).values_list("features", flat=True).first()
    return {str(k): bool(v) for k, v in (caps or {}).items()}


def _bound_offline(client: PortalClient) -> set[str]:
    rows = client.call("event.get") or []
    return {str(row.get("event", "")).upper() for row in rows
            if isinstance(row, dict) and str(row.get("offline", "0")) in ("1", "true", "True")}


def _save_feed(portal: Portal, **values: Any) -> OfflineFeed:
    feed, _ = OfflineFeed.objects.update_or_create(portal=portal, defaults={**values, "checked_at": timezone.now()})
    return feed


@install_step("crm_offline_events", title="Bind offline CRM lead events (changes made in Bitrix24 flow back)",
              order=60)
def bind_offline_events(portal: Portal, client: PortalClient) -> str:
    features = _features(portal)
    if not features.get("rest_offline_extended"):
        _save_feed(portal, status=OfflineFeed.Status.UNAVAILABLE, auth_connector="",
                   detail="feature.get rest_offline_extended = N: changes made in Bitrix24 are not sent back")
        return "offline events unavailable on this portal (rest_offline_extended = N): changes made in " \
               "Bitrix24 are not sent back"
    connector = settings.RECORDS_ORIGINATOR_ID if features.get("rest_auth_connector") else ""
    before = OfflineFeed.objects.filter(portal=portal).values_list("status", "auth_connector").first()
    bound = _bound_offline(client)
    if before and before[0] == OfflineFeed.Status.BOUND and before[1] != connector and bound:
        # The connector changed (the plan changed): bind again under the new one.
        client.batch({event: ("event.unbind", {"event": event, "event_type": "offline"}) for event in OFFLINE_EVENTS})
        bound = _bound_offline(client)
    missing = [event for event in OFFLINE_EVENTS if event not in bound]
    if missing:
        params: dict[str, Any] = {"event_type": "offline"}
        if connector:
            params["auth_connector"] = connector
        batch = client.batch({event: ("event.bind", {"event": event, **params}) for event in missing})
        errors = {key: err for key, err in batch.errors.items() if "ALREADY" not in err.code.upper()}
        for err in errors.values():
            if err.retryable:
                raise err
        still = [event for event in OFFLINE_EVENTS if event not in _bound_offline(client)]
        if errors or still:
            reason = "; ".join([f"{key}: {err.code} {err.description}" for key, err in errors.items()]
                               + ([f"event.get does not show {', '.join(still)}"] if still else []))
            # Not a reason to fail the install (SMS, widgets and the records API work without it): the feed
            # says so in admin, the journal has it, and the next app update or staff re-run tries again.
            _save_feed(portal, status=OfflineFeed.Status.FAILED, auth_connector=connector, detail=reason[:500])
            journal(portal, "rest", f"offline CRM events not bound: {reason}"[:500], level="warning")
            return f"offline events NOT bound ({reason[:200]}): changes made in Bitrix24 are not sent back"
    _save_feed(portal, status=OfflineFeed.Status.BOUND, auth_connector=connector,
               detail=f"bound {', '.join(OFFLINE_EVENTS)}" + (f" with auth_connector {connector}" if connector
                                                             else " (no auth_connector: own writes recognised "
                                                                  "by their state)"))
    return f"offline events {'bound ' + ', '.join(missing) if missing else 'already bound'}" + \
        (f" (auth_connector {connector})" if connector else " (without auth_connector)")


# -- comparing a lead with our last write -------------------------------------------------------------


def _norm(value: Any) -> Any:
    """Lead values as comparable data: multi-fields (PHONE, EMAIL) as the set of their values."""
    if isinstance(value, list):
        return frozenset(str(item.get("VALUE", "")).strip() if isinstance(item, Mapping) else str(item).strip()
                         for item in value) - {""}
    if value is None:
        return ""
    return str(value).strip()


def changed_fields(written: Mapping[str, Any], lead: Mapping[str, Any]) -> list[str]:
    """The fields of our last write that the lead no longer has."""
    return sorted(name for name, value in written.items() if _norm(lead.get(name)) != _norm(value))


def as_written(value: Any) -> Any:
    """A lead value in the shape our writes have (multi-fields as [{VALUE, VALUE_TYPE}], no ids), so the
    next comparison, and the applier's "did the phone change" check, compare like with like."""
    if isinstance(value, list):
        return [{"VALUE": item.get("VALUE"), "VALUE_TYPE": item.get("VALUE_TYPE") or "WORK"}
                for item in value if isinstance(item, Mapping)]
    return value


def external_stage(portal: Portal, status_id: str) -> str:
    row = StageMapping.objects.filter(portal=portal, status_id=status_id).order_by("sort", "external_stage") \
        .values_list("external_stage", flat=True).first()
    return row or status_id


def _first_value(value: Any) -> str:
    if isinstance(value, list):
        for item in value:
            if isinstance(item, Mapping) and item.get("VALUE"):
                return str(item["VALUE"])
    return ""


def lead_user(record: Record, lead: Mapping[str, Any], stage: str) -> dict[str, Any]:
    """The record as the lead now has it, in the message vocabulary (what replies show as "user")."""
    name = " ".join(part for k in ("NAME", "SECOND_NAME", "LAST_NAME") if (part := str(lead.get(k) or "").strip()))
    user: dict[str, Any] = {"id": record.external_id, "full_name": name or str(lead.get("TITLE") or ""),
                            "phone": _first_value(lead.get("PHONE")), "stage": stage}
    email = _first_value(lead.get("EMAIL"))
    if email:
        user["email"] = email
    return user


# -- polling ----------------------------------------------------------------------------------------


@dataclass
class PollReport:
    events: int = 0
    changes: int = 0
    echoes: int = 0
    deferred: int = 0
    failed: int = 0
    pages: int = 0
    more: bool = False
    errors: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.events} events: {self.changes} changes sent, {self.echoes} own writes, "
                f"{self.deferred} deferred, {self.failed} failed")


def _lead_id(event: Mapping[str, Any]) -> int | None:
    data = event.get("EVENT_DATA")
    fields = data.get("FIELDS") if isinstance(data, Mapping) else None
    raw = fields.get("ID") if isinstance(fields, Mapping) else None
    try:
        return int(str(raw)) if raw is not None and int(str(raw)) > 0 else None
    except ValueError:
        return None


def _read_leads(client: PortalClient, lead_ids: Sequence[int]) -> tuple[dict[int, dict[str, Any]], set[int],
                                                                        dict[int, str]]:
    """(found leads, ids that no longer exist, ids whose read failed → reason), one batch per 50."""
    found: dict[int, dict[str, Any]] = {}
    gone: set[int] = set()
    failed: dict[int, str] = {}
    ids = list(dict.fromkeys(lead_ids))
    for start in range(0, len(ids), PAGE):
        chunk = ids[start:start + PAGE]
        batch = client.batch({f"l{lead_id}": ("crm.lead.get", {"id": lead_id}) for lead_id in chunk})
        for lead_id in chunk:
            key = f"l{lead_id}"
            err = batch.errors.get(key)
            if err is not None:
                if err.retryable:
                    raise err
                if "NOT_FOUND" in err.code.upper() or "not found" in err.description.lower():
                    gone.add(lead_id)
                else:
                    failed[lead_id] = f"{err.code} {err.description}"[:200]
            elif isinstance(batch.results.get(key), Mapping):
                found[lead_id] = dict(batch.results[key])
            else:
                gone.add(lead_id)
    return found, gone, failed


def _apply_change(portal: Portal, record: Record, lead: Mapping[str, Any]) -> bool:
    """Queue card_changed when the lead differs from our last write; False when it is our own write."""
    with transaction.atomic():
        locked = Record.objects.select_for_update().get(pk=record.pk)
        written = dict(locked.last_written or {})
        if not changed_fields(written, lead):
            return False
        status_id = str(lead.get("STATUS_ID") or "")
        stage = external_stage(portal, status_id) if status_id else locked.stage
        locked.last_written = {name: as_written(lead.get(name)) for name in written}
        locked.stage = stage
        locked.save(update_fields=["last_written", "stage", "updated_at"])
        do_queue_replies(None, locked, {"status": "success", "action": "card_changed",
                                        "user": lead_user(locked, lead, stage), "bitrix_lead_id": locked.lead_id,
                                        "stage": stage})
    return True


def _apply_delete(record: Record) -> bool:
    with transaction.atomic():
        locked = Record.objects.select_for_update().get(pk=record.pk)
        if not locked.last_written:
            return False  # already told (a repeated event)
        lead_id = locked.lead_id
        locked.last_written = {}
        locked.save(update_fields=["last_written", "updated_at"])
        do_queue_replies(None, locked, {"status": "success", "action": "card_deleted",
                                        "user": {"id": locked.external_id}, "bitrix_lead_id": lead_id,
                                        "stage": locked.stage})
    return True


def process_events(portal: Portal, client: PortalClient, events: Iterable[Mapping[str, Any]],
                   report: PollReport) -> tuple[list[str], list[str]]:
    """(ids to clear, message ids to mark as errors)."""
    events = [e for e in events if isinstance(e, Mapping)]
    lead_ids = {lid for e in events if (lid := _lead_id(e)) is not None}
    records = {r.lead_id: r for r in Record.objects.filter(portal=portal, lead_id__in=lead_ids)}
    busy = set(SyncJob.objects.filter(record__in=list(records.values()),
                                      state__in=[SyncJob.State.PENDING, SyncJob.State.RUNNING])
               .values_list("record__lead_id", flat=True))
    updates = [lid for e in events if str(e.get("EVENT_NAME", "")).upper() == "ONCRMLEADUPDATE"
               and (lid := _lead_id(e)) is not None and lid in records and lid not in busy]
    found, gone, read_failed = _read_leads(client, updates)
    clear: list[str] = []
    errors: list[str] = []
    for event in events:
        report.events += 1
        event_id, message_id = str(event.get("ID", "")), str(event.get("MESSAGE_ID", ""))
        name = str(event.get("EVENT_NAME", "")).upper()
        lead_id = _lead_id(event)
        try:
            if name not in OFFLINE_EVENTS or lead_id is None:
                raise ValueError(f"not a lead event we bound: {name} {str(event.get('EVENT_DATA'))[:80]}")
            record = records.get(lead_id)
            if record is None:
                clear.append(event_id)  # a lead that is not one of our records
                continue
            if lead_id in busy:
                report.deferred += 1  # left claimed: read again once our write is recorded
                continue
            if name == "ONCRMLEADDELETE" or lead_id in gone:
                sent = _apply_delete(record)
            elif lead_id in read_failed:
                raise ValueError(f"crm.lead.get {lead_id}: {read_failed[lead_id]}")
            else:
                sent = _apply_change(portal, record, found[lead_id])
            report.changes += int(sent)
            report.echoes += int(not sent)
            clear.append(event_id)
        except Exception as exc:  # one bad event is marked, the others go on
            if isinstance(exc, B24Error) and exc.retryable:
                raise
            report.failed += 1
            report.errors.append(str(exc)[:200])
            logger.warning("offline event failed", extra={"event": name, "error": str(exc)[:200]})
            errors.append(message_id)
    return clear, errors


def poll_portal(portal: Portal, client: PortalClient | None = None) -> PollReport:
    """Claim, process and acknowledge this portal's offline events (up to PAGES_PER_RUN pages)."""
    report = PollReport()
    feed = OfflineFeed.objects.filter(portal=portal, status=OfflineFeed.Status.BOUND).first()
    if feed is None:
        return report
    client = client or PortalClient(portal)
    for _page in range(PAGES_PER_RUN):
        params: dict[str, Any] = {"clear": 0, "process_id": feed.process_id, "limit": PAGE}
        if feed.auth_connector:
            params["auth_connector"] = feed.auth_connector
        result = client.call("event.offline.get", params) or {}
        events = result.get("events") or [] if isinstance(result, Mapping) else []
        process_id = str(result.get("process_id") or feed.process_id) if isinstance(result, Mapping) else ""
        if process_id and process_id != feed.process_id:  # adopt the id Bitrix24 marked them with
            feed.process_id = process_id
            OfflineFeed.objects.filter(pk=feed.pk).update(process_id=process_id)
        report.pages += 1
        if not events:
            break
        before = report.deferred
        clear, errors = process_events(portal, client, events, report)
        commands: dict[str, Any] = {}
        if errors:
            commands["error"] = ("event.offline.error", {"process_id": feed.process_id, "message_id": errors})
        if clear:
            commands["clear"] = ("event.offline.clear", {"process_id": feed.process_id, "id": clear})
        if commands:
            batch = client.batch(commands)
            for err in batch.errors.values():
                raise err
        OfflineFeed.objects.filter(pk=feed.pk).update(
            events_processed=F("events_processed") + len(clear), events_failed=F("events_failed") + len(errors),
            last_polled_at=timezone.now(), last_error=("; ".join(report.errors))[:500] if errors else "")
        if len(events) < PAGE or (report.deferred > before and not clear and not errors):
            break  # all read, or only deferred ones are left (they would come back at once)
    else:
        report.more = True
    OfflineFeed.objects.filter(pk=feed.pk).update(last_polled_at=timezone.now(),
                                                  changes_sent=F("changes_sent") + report.changes)
    return report


# -- tasks (maintenance queue) -------------------------------------------------------------------------


def _give_up(portal: Portal, exc: B24Error) -> None:
    OfflineFeed.objects.filter(portal=portal).update(last_error=f"{exc.code} {exc.description}"[:500])
    journal(portal, "rest", f"offline events: {exc.code} {exc.description}"[:500], level="error")


def _poll(portal: Portal) -> str:
    report = poll_portal(portal)
    if report.more:
        schedule.mark_due(portal, OFFLINE_CHECK)
    return "polled" if report.pages else "not bound"


@shared_task
def poll_offline_events() -> int:
    """Beat: claim the portals whose offline events are due and poll them in chunks."""
    return dispatch_due(OFFLINE_CHECK, poll_offline_events_chunk)


@shared_task(acks_late=True)
def poll_offline_events_chunk(portal_ids: list[int]) -> dict[str, int]:
    return run_for_each(OFFLINE_CHECK, portal_ids, _poll, _give_up)


def poll_interval() -> timedelta:
    return timedelta(seconds=settings.RECORDS_OFFLINE_POLL_SECONDS)
