"""The one retry rule for Celery tasks that call Bitrix24.

A `B24Error` says whether a retry is worth it (`retryable`) and, for limits, how long to wait
(`retry_after`, or an operating block's `reset_at`). A task that meets one re-queues itself with
`self.retry(countdown=retry_delay(exc, retries))` and never sleeps in the worker; when the error is
permanent or the retries are spent, the task's `give_up` handler records the failure where staff see it.

    @portal_task(max_retries=6, give_up=lambda exc, portal_id: ...)
    def check_capabilities(self, portal_id: int) -> str: ...

Tasks with their own bookkeeping between attempts call `retry_if_worth_it(self, exc)` themselves.

A method an administrator must confirm first (401 METHOD_CONFIRM_WAITING) is neither retried nor given up:
the task is parked (oauth.confirmation: a visible ParkedCall row, journaled) and ONAPPMETHODCONFIRM resumes
or fails it. A `portal_task` then returns PARKED; `retry_if_worth_it` ends the task with Celery's `Ignore`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from celery import Task, shared_task
from celery.exceptions import Ignore

from .client import retry_delay
from .confirmation import do_park
from .errors import B24Error, B24MethodConfirmWaiting

Result = TypeVar("Result")
PARKED = "parked: waiting for an administrator to confirm the method"


def park_if_awaiting_confirmation(task: Task, exc: B24Error) -> bool:
    """Park the task when `exc` says an administrator must confirm the method first."""
    return isinstance(exc, B24MethodConfirmWaiting) and do_park(task, exc) is not None


def retry_if_worth_it(task: Task, exc: B24Error) -> None:
    """Raise celery's Retry (after the delay the error asks for) when a retry is worth it; park the task (and
    end it with `Ignore`) when the method awaits an administrator's confirmation; else return.
    `max_retries=None` means what it means to Celery: retry for as long as the error is retryable."""
    if park_if_awaiting_confirmation(task, exc):
        raise Ignore() from exc
    limit = task.max_retries
    if exc.retryable and (limit is None or task.request.retries < limit):
        raise task.retry(countdown=retry_delay(exc, task.request.retries)) from exc


def portal_task(*, give_up: Callable[..., Any] | None = None, max_retries: int = 5,
                **options: Any) -> Callable[[Callable[..., Any]], Task]:
    """A bound shared task whose B24Errors follow the retry rule; `give_up(exc, *args, **kwargs)` handles
    what is not worth retrying (without it the error propagates) and its return value is the task's."""

    def decorate(func: Callable[..., Any]) -> Task:
        @wraps(func)
        def run(self: Task, *args: Any, **kwargs: Any) -> Any:
            try:
                return func(self, *args, **kwargs)
            except B24Error as exc:
                if park_if_awaiting_confirmation(self, exc):
                    return PARKED
                retry_if_worth_it(self, exc)
                if give_up is None:
                    raise
                return give_up(exc, *args, **kwargs)

        task: Task = shared_task(bind=True, max_retries=max_retries, **options)(run)
        return task

    return decorate
