"""The handler's outbox: the send of a message Bitrix24 POSTed is published by a dispatcher, not by the request.

The handler's one INSERT (`sending.accept_from_handler`, PostgreSQL) stores the message with
`dispatch_pending` set; a `pg_notify(NOTIFY_CHANNEL)` right after it (a statement of its own: see there why)
wakes the dispatcher. The dispatcher runs as a thread of the SMS worker (`DispatcherStep`, a worker bootstep
registered in `MessageserviceConfig.ready`): it LISTENs on a connection of its own and drains the outbox
`GATHER_SECONDS` after a notification (one drain for a burst), and every `SMS_DISPATCH_POLL_SECONDS` as a
safety net (a notification missed while it reconnected, a drain that stopped at a broker outage).

Never lost, never sent twice: a row stays pending until the transaction that published its task clears
it; a dispatcher that dies between the publish and that commit leaves the row pending, so it is published
again, and `tasks.send_message`'s claim (a conditional UPDATE) makes the second task a no-op. A row whose
dispatcher never comes back is dispatched by `tasks.redispatch_lost_messages` after its grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import psycopg
from celery import Celery, bootsteps
from django.conf import settings
from django.db import close_old_connections, connection, connections, transaction

from b24portal.dispatch import dispatch_on_commit, publish_each

from .models import Message
from .tasks import send_message

logger = logging.getLogger(__name__)

#: the PostgreSQL channel the handler's INSERT notifies and the dispatcher listens on
NOTIFY_CHANNEL = "sms_dispatch"
#: rows published per transaction (one producer connection, one UPDATE clearing them)
DRAIN_BATCH = 500
#: the queue whose worker runs the dispatcher (the Procfile's `worker-sms`)
SMS_QUEUE = "sms"
# How long the listener waits for a notification at a time: bounds how long a stopping worker waits for it.
_WAIT_SLICE_SECONDS = 0.5
_RECONNECT_SECONDS = 2.0
#: after a notification, how long the dispatcher lets more messages arrive before it drains: one drain (a
#: transaction, a publish connection, one UPDATE) then serves tens of messages at a busy handler instead of
#: two or three, which is what keeps its CPU below the in-request publish it replaces (measured: without
#: it, 3,127 drains for 8,696 messages cost the handler a third of its throughput on the same 2 CPUs).
#: An SMS waits at most this much longer for its send.
GATHER_SECONDS = 0.1

_TABLE = Message._meta.db_table
# Index sms_msg_dispatch_pending. SKIP LOCKED: dispatchers of several SMS workers take disjoint batches.
_PENDING_SQL = f"SELECT id FROM {_TABLE} WHERE dispatch_pending ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED"  # noqa: S608 (our table)
_CLEAR_SQL = f"UPDATE {_TABLE} SET dispatch_pending = false WHERE id = ANY(%s)"  # noqa: S608 (our table)


def dispatch_pending_sends(limit: int = DRAIN_BATCH) -> int:
    """Publish `send_message` for up to `limit` pending messages, oldest first, and clear their flag; returns
    how many were published. One transaction: the rows are locked (skipping those another dispatcher holds),
    published over one producer connection, then cleared in one UPDATE. A broker that is down stops the
    batch (logged by `publish_each`): what was not published stays pending. In eager mode (tests) the
    sends run after this transaction commits, as the worker would run them after the publish."""
    if connection.vendor != "postgresql":  # only the PostgreSQL handler path marks rows pending
        return 0
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_PENDING_SQL, [limit])
            ids = [int(row[0]) for row in cursor.fetchall()]
        if not ids:
            return 0
        if send_message.app.conf.task_always_eager:
            for pk in ids:
                dispatch_on_commit(send_message, pk)
            published = ids
        else:
            published = ids[:publish_each(send_message, [(pk,) for pk in ids])]
        if published:
            with connection.cursor() as cursor:
                cursor.execute(_CLEAR_SQL, [published])
    return len(published)


def drain(limit: int = DRAIN_BATCH) -> int:
    """`dispatch_pending_sends` until the outbox is empty or the broker stops taking tasks; returns how many
    were published."""
    total = 0
    while True:
        published = dispatch_pending_sends(limit)
        total += published
        if published < limit:
            return total


class OutboxDispatcher:
    """The dispatcher thread: LISTEN on its own autocommit connection, drain `gather_seconds` after a
    notification and every `poll_seconds`. Its drains use this thread's own Django connection, closed when the thread ends."""

    def __init__(self, *, poll_seconds: float, batch: int = DRAIN_BATCH,
                 gather_seconds: float = GATHER_SECONDS) -> None:
        self.poll_seconds = poll_seconds
        self.gather_seconds = gather_seconds
        self.batch = batch
        self.published = 0  # totals, for the tests
        self.drains = 0
        #: set while the LISTEN is in place (what a caller waits on before relying on notifications)
        self.listening = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sms-outbox-dispatcher", daemon=True)

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._listen_and_drain()
                except Exception as exc:  # database restarted, network: listen again (and catch up) shortly
                    self.listening.clear()
                    logger.warning("SMS outbox dispatcher lost its database connection; reconnecting",
                                   extra={"error": type(exc).__name__})
                    self._stopping.wait(_RECONNECT_SECONDS)
        finally:
            self.listening.clear()
            connections.close_all()  # this thread's Django connections

    def _listen_and_drain(self) -> None:
        params: dict[str, Any] = connections["default"].get_connection_params()
        with psycopg.connect(**params, autocommit=True) as listener:
            listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self.listening.set()
            self._drain()  # what was committed while nobody listened
            last_drain = time.monotonic()
            while not self._stopping.is_set():
                woken = bool(list(listener.notifies(timeout=_WAIT_SLICE_SECONDS, stop_after=1)))
                if woken:
                    self._stopping.wait(self.gather_seconds)
                    list(listener.notifies(timeout=0))  # one drain answers the whole burst
                if woken or time.monotonic() - last_drain >= self.poll_seconds:
                    self._drain()
                    last_drain = time.monotonic()

    def _drain(self) -> None:
        close_old_connections()  # what Django does around a request: a broken or too old connection goes
        while not self._stopping.is_set():
            published = dispatch_pending_sends(self.batch)
            self.published += published
            if published < self.batch:
                break
        self.drains += 1


def runs_dispatcher(worker: Any) -> bool:
    """A worker runs the dispatcher when it consumes the `sms` queue (whatever else it consumes: the SMS
    worker also takes `sms_status`; a worker of `sms_status` alone has no sends to publish) and the database
    is PostgreSQL (the SQLite path of `make run` publishes in the request and marks nothing pending)."""
    if connections["default"].vendor != "postgresql":
        return False
    return SMS_QUEUE in set(worker.app.amqp.queues.consume_from)


class DispatcherStep(bootsteps.StartStopStep):
    """The outbox dispatcher as a step of the SMS worker: started after the pool, stopped with the worker."""

    label = "SMS outbox dispatcher"
    requires = ("celery.worker.components:Pool",)

    def include_if(self, parent: Any) -> bool:
        return runs_dispatcher(parent)

    # Celery keeps what `create` returns as the step's `obj` (started and stopped with it); its stubs say None.
    def create(self, parent: Any) -> OutboxDispatcher:  # type: ignore[override]
        return OutboxDispatcher(poll_seconds=float(settings.SMS_DISPATCH_POLL_SECONDS))


def register_dispatcher_step(app: Celery) -> None:
    """Add the step to `app`'s worker blueprint. Called from `MessageserviceConfig.ready`: Celery's Django
    fix-up runs django.setup() (so every ready()) when the worker loads its modules, at the start of
    WorkController.__init__, and the blueprint is built from `app.steps["worker"]` after that."""
    app.steps["worker"].add(DispatcherStep)
