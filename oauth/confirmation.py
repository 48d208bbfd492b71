"""Methods an administrator must confirm (spec §7: METHOD_CONFIRM_WAITING / ONAPPMETHODCONFIRM).

A task whose call is answered 401 METHOD_CONFIRM_WAITING does not fail and does not retry: the retry rule
(oauth.retry) parks it here — a `ParkedCall` row with the task, its arguments, the method and a hash of the
access token the call used — and the journal tells staff that an administrator must confirm the method.
`do_decide` (from the ONAPPMETHODCONFIRM event, which names the method and the token) resumes the parked
tasks on a yes and fails them with the reason on a no. The grant belongs to that access token: a call made
after a refresh, with another token, gets METHOD_CONFIRM_WAITING again and parks again. `do_expire` fails
calls nobody decided within B24_METHOD_CONFIRM_TIMEOUT_HOURS (a periodic sweep on the maintenance queue).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta

from celery import Task, current_app, shared_task
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit, publish, redispatch_late
from tenants.journal import Actor, journal
from tenants.models import JournalEntry, Portal

from .errors import B24MethodConfirmWaiting
from .models import ParkedCall

logger = logging.getLogger(__name__)

State = ParkedCall.State
# A confirmed call whose resume was not dispatched within this time (broker down) is dispatched again.
REDISPATCH_AFTER = timedelta(minutes=2)


def token_hash(access_token: str) -> str:
    return hashlib.sha256(access_token.encode()).hexdigest()


def do_park(task: Task, exc: B24MethodConfirmWaiting) -> ParkedCall | None:
    """Park the running task until an administrator decides. The same task with the same arguments waiting
    for the same token is parked once. None when the error does not say which portal it came from."""
    portal = Portal.objects.filter(pk=exc.portal_id).first() if exc.portal_id else None
    if portal is None:
        return None
    args = list(task.request.args or [])
    kwargs = dict(task.request.kwargs or {})
    method = (exc.method or "").lower()
    with transaction.atomic():
        existing = (ParkedCall.objects.select_for_update()
                    .filter(portal=portal, method=method, task_name=task.name, state=State.WAITING,
                            token_hash=exc.token_hash, args=args, kwargs=kwargs).first())
        if existing is not None:
            return existing
        parked = ParkedCall.objects.create(portal=portal, method=method, task_name=task.name, args=args,
                                           kwargs=kwargs, token_hash=exc.token_hash)
        journal(portal, JournalEntry.Kind.REST,
                f"A portal administrator must confirm the REST method {method} for this app (Bitrix24 asks them "
                f"in its notifications); {task.name} waits for that decision.",
                level=JournalEntry.Level.WARNING, actor=Actor.BITRIX24,
                details={"method": method, "task": task.name, "parked_call": parked.pk})
    return parked


def do_decide(portal: Portal, *, method: str, access_token: str | None, confirmed: bool) -> int:
    """An administrator's decision (ONAPPMETHODCONFIRM): resume or fail the calls parked for that method and
    token (every token of that method when the event names none). Returns how many were decided."""
    now = timezone.now()
    method = method.lower()
    with transaction.atomic():
        rows = ParkedCall.objects.select_for_update().filter(portal=portal, method=method, state=State.WAITING)
        if access_token:
            rows = rows.filter(token_hash=token_hash(access_token))
        parked = list(rows.order_by("parked_at", "pk"))
        for call in parked:
            task = current_app.tasks.get(call.task_name) if confirmed else None
            if confirmed and task is None:
                _fail(call, f"confirmed, but the task {call.task_name} no longer exists", now)
            elif confirmed and task is not None:
                call.state, call.decided_at, call.reason = State.CONFIRMED, now, "confirmed by an administrator"
                call.save(update_fields=["state", "decided_at", "reason"])
                dispatch_on_commit(resume_parked_call, call.pk)
            else:
                _fail(call, f"an administrator of the portal denied the app the method {method}", now)
        if parked:
            journal(portal, JournalEntry.Kind.EVENT,
                    f"An administrator {'confirmed' if confirmed else 'denied'} the REST method {method}: "
                    f"{len(parked)} waiting call(s) {'resumed' if confirmed else 'failed'}.",
                    level=JournalEntry.Level.INFO if confirmed else JournalEntry.Level.ERROR, actor=Actor.BITRIX24,
                    details={"method": method, "confirmed": confirmed, "calls": [c.pk for c in parked]})
    return len(parked)


@shared_task
def resume_parked_call(parked_id: int) -> str:
    """Dispatch a confirmed call's own task again with its arguments; only then is it `resumed`."""
    call = ParkedCall.objects.filter(pk=parked_id, state=State.CONFIRMED).first()
    if call is None:
        return "not owed"
    task = current_app.tasks.get(call.task_name)
    if task is None:
        _fail(call, f"confirmed, but the task {call.task_name} no longer exists", timezone.now())
        return "failed"
    if not ParkedCall.objects.filter(pk=call.pk, state=State.CONFIRMED).update(state=State.RESUMED):
        return "not owed"  # another resume took it
    if not publish(task, *call.args, **call.kwargs):
        ParkedCall.objects.filter(pk=call.pk).update(state=State.CONFIRMED)  # the sweeper tries again
        return "not dispatched"
    return "resumed"


def redispatch_confirmed(now: datetime | None = None) -> int:
    """Sweeper: confirmed calls whose resume was lost (broker down at commit) are dispatched again."""
    now = now or timezone.now()
    owed = ParkedCall.objects.filter(state=State.CONFIRMED, decided_at__lt=now - REDISPATCH_AFTER)
    return redispatch_late(owed, "decided_at", resume_parked_call, now=now, limit=500)


def do_expire(now: datetime | None = None) -> int:
    """Fail the calls no administrator decided within B24_METHOD_CONFIRM_TIMEOUT_HOURS."""
    now = now or timezone.now()
    hours = int(settings.B24_METHOD_CONFIRM_TIMEOUT_HOURS)
    cutoff = now - timedelta(hours=hours)
    expired = 0
    with transaction.atomic():
        for call in (ParkedCall.objects.select_for_update(skip_locked=True).select_related("portal")
                     .filter(state=State.WAITING, parked_at__lt=cutoff).order_by("parked_at")[:1000]):
            reason = f"no administrator confirmed the REST method {call.method} within {hours} hours"
            _fail(call, reason, now)
            journal(call.portal, JournalEntry.Kind.REST, f"{call.task_name} failed: {reason}.",
                    level=JournalEntry.Level.ERROR, details={"method": call.method, "parked_call": call.pk})
            expired += 1
    return expired


def do_fail_by_staff(calls: Iterable[ParkedCall], actor: Actor) -> int:
    """Staff give up on waiting calls (e.g. the customer will not use the feature that needs the method)."""
    now = timezone.now()
    failed = 0
    with transaction.atomic():
        for call in (ParkedCall.objects.select_for_update().select_related("portal")
                     .filter(pk__in=[c.pk for c in calls], state=State.WAITING)):
            _fail(call, f"given up by {actor}", now)
            journal(call.portal, JournalEntry.Kind.STAFF,
                    f"{call.task_name} waiting for {call.method}: given up by staff.", actor=actor,
                    details={"parked_call": call.pk})
            failed += 1
    return failed


def _fail(call: ParkedCall, reason: str, now: datetime) -> None:
    call.state, call.decided_at, call.reason = State.FAILED, now, reason[:500]
    call.save(update_fields=["state", "decided_at", "reason"])
