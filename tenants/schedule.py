"""Periodic checks that cost what is due, not what exists.

Each kind of check ("senders", "bindings", "capabilities", ...) has one `PortalCheck` row per active portal
with its next `due_at`. A safety sweep visits each portal once per interval, spread evenly over it (the
first due time is offset by a stable hash of the portal); a trigger (`mark_due`) makes a check due at once.
`claim_due` takes a limited number of due rows through the (kind, due_at) index with SKIP LOCKED and moves
their due time forward in the same statement's transaction, so two dispatchers never take the same portal.
The caller enqueues the claimed portals in chunks (many portals per task).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Case, DateTimeField, Value, When
from django.utils import timezone

from .models import Portal, PortalCheck

# kind -> its interval (a callable, so tests and settings overrides are read when used)
_kinds: dict[str, Callable[[], timedelta]] = {}
# kinds that also run for webhook-connected portals (the others need an installed app: senders, bindings)
_webhook_kinds: set[str] = set()


def register_check(kind: str, interval: Callable[[], timedelta], *, for_webhooks: bool = False) -> None:
    """Apps declare their periodic checks in AppConfig.ready(). `for_webhooks`: the check works through an
    incoming webhook too (most reconcile what an installed app registered, which a webhook portal has not)."""
    _kinds[kind] = interval
    if for_webhooks:
        _webhook_kinds.add(kind)


def interval_of(kind: str) -> timedelta:
    return _kinds[kind]()


def registered_kinds() -> list[str]:
    return sorted(_kinds)


def kinds_for(portal: Portal) -> list[str]:
    """The checks that apply to this portal: all of them for an installed app, a webhook's subset otherwise."""
    if portal.is_webhook:
        return sorted(_webhook_kinds & set(_kinds))
    return registered_kinds()


def ensure_portal_scheduled(portal: Portal) -> None:
    """Every check that applies gets a first due time for this portal (an install finished, a webhook was
    added)."""
    for kind in kinds_for(portal):
        ensure_scheduled([portal.pk], [kind], interval_of(kind))


def spread_offset(portal_id: int, kind: str, interval: timedelta) -> timedelta:
    """A stable offset in [0, interval): the portals' checks of one kind are spread evenly over it."""
    digest = hashlib.sha256(f"{kind}:{portal_id}".encode()).digest()
    fraction = int.from_bytes(digest[:8], "big") / 2**64
    return timedelta(seconds=int(interval.total_seconds() * fraction))


def ensure_scheduled(portal_ids: Iterable[int], kinds: Sequence[str], interval: timedelta,
                     now: datetime | None = None) -> int:
    """Give portals without a row for a kind their first due time (spread over the interval)."""
    now = now or timezone.now()
    rows = [PortalCheck(portal_id=pid, kind=kind, due_at=now + spread_offset(pid, kind, interval))
            for pid in portal_ids for kind in kinds]
    created = PortalCheck.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
    return len(created)


def mark_due(portal: Portal, *kinds: str, at: datetime | None = None) -> int:
    """A reason to check now (or at `at`): an app update, an error that suggests something vanished, staff.
    Kinds that do not apply to the portal (an app-only check of a webhook portal) are ignored. Returns how
    many checks this made due earlier than they were (0: all were due by then already), so a caller can
    journal a trigger once instead of on every repeat."""
    due = at or timezone.now()
    moved = 0
    for kind in kinds:
        if portal.is_webhook and kind not in _webhook_kinds:
            continue
        updated = PortalCheck.objects.filter(portal=portal, kind=kind, due_at__gt=due).update(due_at=due)
        if not updated:
            _row, created = PortalCheck.objects.get_or_create(portal=portal, kind=kind, defaults={"due_at": due})
            updated = int(created)
        moved += updated
    return moved


def claim_due(kind: str, *, interval: timedelta, limit: int, now: datetime | None = None) -> list[int]:
    """Up to `limit` active portals whose `kind` check is due; their next due time moves one interval on
    (keeping each portal's place in the spread). Rows of inactive portals, and of webhook portals for a
    check that needs an installed app, are moved on without a claim."""
    now = now or timezone.now()
    webhooks_too = kind in _webhook_kinds
    with transaction.atomic():
        rows = list(PortalCheck.objects.select_for_update(skip_locked=True, of=("self",))
                    .filter(kind=kind, due_at__lte=now).order_by("due_at")
                    .values_list("pk", "portal_id", "due_at", "portal__status", "portal__connection")[:limit])
        if not rows:
            return []
        # One statement per distinct next due time would defeat the purpose; rows are moved to
        # due_at + k*interval computed in Python and written with a CASE in one UPDATE.
        whens = [When(pk=row[0], then=Value(_next_due(row[2], interval, now))) for row in rows]
        PortalCheck.objects.filter(pk__in=[row[0] for row in rows]).update(
            due_at=Case(*whens, output_field=DateTimeField()), last_run_at=now)
    return [pid for _pk, pid, _due, status, connection in rows
            if status == Portal.Status.ACTIVE and (webhooks_too or connection == Portal.Connection.APP)]


def _next_due(due_at: datetime, interval: timedelta, now: datetime) -> datetime:
    """The next slot of this portal's rhythm after `now` (a long outage does not bunch portals up)."""
    if due_at + interval > now:
        return due_at + interval
    behind = (now - due_at) // interval + 1
    return due_at + interval * behind


def chunks(ids: Sequence[int], size: int) -> list[list[int]]:
    return [list(ids[i:i + size]) for i in range(0, len(ids), max(size, 1))]
