"""Dispatching Celery work once a transaction has committed, without letting the broker undo the answer.

The work is saved before it is dispatched (a message row, an install run, an outbox row), so a publish that
fails (broker down, full, unreachable) must not turn a committed request into an error: the failure is
logged (task name and error type only: arguments may carry personal data) and a periodic sweeper of the
owning app finds the row and dispatches it again once the broker is back.
"""

from __future__ import annotations

import logging
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
                    limit: int = 1000) -> int:
    """The sweepers' loop: dispatch `task(pk)` again for the rows of `due` (work whose task was lost),
    oldest `clock_field` first. Each row is claimed by moving its clock to `now` through `due` itself (a
    conditional UPDATE, so a second sweeper skips it); the loop stops while the broker is still down, and
    the rows claimed so far come round again after their grace period. Returns how many were dispatched."""
    dispatched = 0
    for pk in list(due.order_by(clock_field).values_list("pk", flat=True)[:limit]):
        if not due.filter(pk=pk).update(**{clock_field: now}):
            continue  # another sweeper took it
        if not publish(task, pk):
            break
        dispatched += 1
    return dispatched
