"""Periodic checks against Bitrix24 that cost what is due (tenants.schedule), run many portals per task.

A beat tick calls `dispatch_due(kind, chunk_task)`: one indexed query claims the due portals (at most
B24_DUE_CHECKS_PER_TICK) and they are enqueued B24_DUE_CHECKS_PER_TASK to a task. The chunk task calls
`run_for_each`, which loads its portals in one query and checks them one by one. The retry rule applies per
portal: a retryable error makes that portal's check due again after `retry_delay(exc)` (honouring
`retry_after`), so one rate-limited portal neither fails nor holds up the others in its chunk.

Triggers: besides the slow sweep, a check runs early when our normal (non-reconcile) work meets a sign that
what the check keeps registered has vanished. Each app lists those signs as data, a `Vanished` table of
(method, Bitrix24 error code) -> check kind next to the code that calls the method (the kinds live there,
above this floor); `check_now_after_error` looks an error up in it and `check_now` makes the check due and
journals why, once per early run (a repeat while the check is already due writes nothing).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from celery import Task
from django.conf import settings
from django.utils import timezone

from b24portal.logging import log_context
from tenants import schedule
from tenants.journal import journal
from tenants.models import JournalEntry, Portal

from .client import retry_delay
from .errors import B24Error


def dispatch_due(kind: str, chunk_task: Task) -> int:
    ids = schedule.claim_due(kind, interval=schedule.interval_of(kind), limit=settings.B24_DUE_CHECKS_PER_TICK)
    for chunk in schedule.chunks(ids, settings.B24_DUE_CHECKS_PER_TASK):
        chunk_task.delay(chunk)
    return len(ids)


def run_for_each(kind: str, portal_ids: Sequence[int], check: Callable[[Portal], str],
                 give_up: Callable[[Portal, B24Error], None]) -> dict[str, int]:
    """Run `check` for each still-active portal; tally the outcomes."""
    outcomes: Counter[str] = Counter()
    for portal in Portal.objects.filter(pk__in=list(portal_ids), status=Portal.Status.ACTIVE).order_by("pk"):
        with log_context(member_id=portal.member_id):
            try:
                outcomes[check(portal)] += 1
            except B24Error as exc:
                if exc.retryable:
                    schedule.mark_due(portal, kind, at=timezone.now() + timedelta(seconds=retry_delay(exc)))
                    outcomes["retry later"] += 1
                else:
                    give_up(portal, exc)
                    outcomes[exc.code] += 1
    return dict(outcomes)


#: (REST method, Bitrix24 error code) -> the check kind that error makes due at once
Vanished = Mapping[tuple[str, str], str]


def check_now(portal: Portal, kind: str, reason: str) -> bool:
    """Make the portal's `kind` check due now (the next beat tick reconciles it in its chunk task) and journal
    the reason, so staff see why it ran early. Returns False, writing nothing, when it was due already or
    the check does not apply to the portal. `reason` is shown to staff: never put a secret in it."""
    if not schedule.mark_due(portal, kind):
        return False
    journal(portal, JournalEntry.Kind.BINDING, f"{kind} check due now: {reason}", details={"check": kind})
    return True


def check_now_after_error(portal: Portal, table: Vanished, method: str, error: B24Error) -> bool:
    """`check_now` when `table` says this method's error means something of ours vanished; False otherwise."""
    kind = table.get((method, error.code))
    if kind is None:
        return False
    return check_now(portal, kind, f"{method} answered {error.code}")
