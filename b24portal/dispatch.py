"""Dispatching Celery work once a transaction has committed, without letting the broker undo the answer.

The work is saved before it is dispatched (a message row, an install run, an outbox row), so a publish that
fails (broker down, full, unreachable) must not turn a committed request into an error: the failure is
logged (task name and error type only: arguments may carry personal data) and a periodic sweeper of the
owning app finds the row and dispatches it again once the broker is back.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from celery import Task
from django.db import transaction
from django.db.models import QuerySet

logger = logging.getLogger(__name__)


def publish(task: Task, *args: Any, **kwargs: Any) -> bool:
    """Send `task` to the broker now; False (logged) when the broker refused or could not be reached.
    In eager mode (tests) the task runs here and its own errors propagate as usual."""
    if task.app.conf.task_always_eager:
        task.apply_async(args=args, kwargs=kwargs)
        return True
    try:
        task.apply_async(args=args, kwargs=kwargs)
    except Exception as exc:  # whatever the broker does: the work is saved, a sweeper dispatches it later
        logger.warning("task not dispatched, a sweeper will dispatch it again",
                       extra={"task": task.name, "error": type(exc).__name__})
        return False
    return True


def publish_each(task: Task, args_list: Sequence[Sequence[Any]]) -> int:
    """Send `task(*args)` for each of `args_list`, in order, over one producer connection (an outbox
    dispatcher's batch). Stops at the first publish the broker refuses or cannot take (logged as in
    `publish`) and returns how many were sent before it: the rest stay owed to the next drain."""
    sent = 0
    try:
        with task.app.producer_or_acquire() as producer:
            for args in args_list:
                task.apply_async(args=tuple(args), producer=producer)
                sent += 1
    except Exception as exc:  # whatever the broker does: the rows stay owed
        logger.warning("task not dispatched, it stays owed to the next drain",
                       extra={"task": task.name, "error": type(exc).__name__})
    return sent


def dispatch_on_commit(task: Task, *args: Any, **kwargs: Any) -> None:
    """`task.delay(*args, **kwargs)` after the current transaction commits; never raises into the caller
    because of the broker. `robust=True` also keeps one failing callback from skipping the others registered
    on that commit. In eager mode (tests) the callback runs the task itself, whose errors (a Celery Retry,
    a bug) propagate as they would in a worker's log, so it is registered as an ordinary callback."""

    def publish_after_commit() -> None:
        publish(task, *args, **kwargs)

    publish_after_commit.__qualname__ = f"publish_after_commit[{task.name}]"
    transaction.on_commit(publish_after_commit, robust=not task.app.conf.task_always_eager)


def redispatch_late(due: QuerySet[Any], clock_field: str, task: Task, *, now: datetime,
                    limit: int = 1000, claim: dict[str, Any] | None = None) -> int:
    """The sweepers' loop: dispatch `task(pk)` again for the rows of `due` (work whose task was lost),
    oldest `clock_field` first. Each row is claimed by moving its clock to `now` through `due` itself (a
    conditional UPDATE, so a second sweeper skips it; `claim` adds fields that UPDATE sets too); the loop
    stops while the broker is still down, and the rows claimed so far come round again after their grace
    period. Returns how many were dispatched."""
    dispatched = 0
    for pk in list(due.order_by(clock_field).values_list("pk", flat=True)[:limit]):
        if not due.filter(pk=pk).update(**{clock_field: now, **(claim or {})}):
            continue  # another sweeper took it
        if not publish(task, pk):
            break
        dispatched += 1
    return dispatched
