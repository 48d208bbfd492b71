"""AMQP intake (RabbitMQ through kombu) and the `amqp` reply deliverer.

Intake. Staff bind queues to portals in admin (`AmqpBinding`). `manage.py consume_records` (the
`IntakeConsumer`) consumes every enabled binding's queue and reads the message format of the home-made
"Bitrix service" it replaces, unchanged:

    {"pattern": "user_created" | "user_updated" | "user_moved",
     "data": {"action": "create_card" | "update_card" | "move_card",
              "user": {"id": 123, "full_name": "...", "phone": "...", "stage": "NEW"},
              "replyQueue": "bitrix.responses"}}

`user.id` is the record's external id. A message is acked only after its job is stored (`do_accept_job`
has committed): a consumer that dies before the ack leaves the message unacked, RabbitMQ delivers it again,
and the idempotency key (the message's `message_id` property, else a hash of its body) finds the job stored
the first time. A message we refuse (not JSON, not that format, or a record the intake refuses) is
published to the dead-letter exchange with the reason in the `x-b24portal-reason` header (publisher
confirms: the copy is on the broker before the original is acked), and, when it names a `replyQueue`, an
error reply goes there (`{"status": "error", "reason": ..., "user": {...}}`) as the old service answered.
Anything else (the database is down, ...) puts the message back for a later try.

Replies. The `amqp` deliverer (registered with `records.replies.register_deliverer`) publishes a reply's
body to its queue: persistent, `message_id` = the reply's delivery id (a receiver can drop duplicates),
through the default exchange, with publisher confirms.

The consumer has a connection for consuming and another for publishing (dead letters, error replies), so a
publish waiting for its confirm never runs a delivery's callback inside another's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from amqp.exceptions import AMQPError, ChannelError
from django.conf import settings
from django.core.checks import Error
from django.db import DatabaseError, close_old_connections
from django.db.models import F
from django.utils import timezone
from kombu import Connection, Consumer, Exchange, Producer, Queue
from kombu.exceptions import OperationalError as KombuOperationalError
from kombu.message import Message

from b24portal.inputs import InputRejected, parse_json_limited
from b24portal.intake import Rejected
from b24portal.logging import log_context
from tenants.models import Portal

from .channels import AmqpBinding
from .intake import FIELDS, InvalidRecord, do_accept_job
from .models import Reply, SyncJob
from .replies import DeliveryError

logger = logging.getLogger(__name__)

# The message format's vocabulary (as data): pattern → the action it carries → our job action.
PATTERN_ACTIONS = {"user_created": "create_card", "user_updated": "update_card", "user_moved": "move_card"}
JOB_ACTIONS = {"create_card": SyncJob.Action.CREATE, "update_card": SyncJob.Action.UPDATE,
               "move_card": SyncJob.Action.MOVE}
REASON_HEADER = "x-b24portal-reason"
QUEUE_HEADER = "x-b24portal-queue"
MAX_QUEUE_NAME = 255  # AMQP short string
QUEUE_NAME_RE = re.compile(r"^[\w.:\-/@]{1,255}$")  # what staff may bind (admin) and name the dead letters
CONNECT_TIMEOUT = 10
PUBLISH_RETRIES = 3
# What a broker that is down, unreachable or refusing raises (kombu wraps some in its OperationalError).
AMQP_ERRORS: tuple[type[BaseException], ...] = (OSError, AMQPError, KombuOperationalError)
RETRY_LATER_ERRORS: tuple[type[BaseException], ...] = (DatabaseError, *AMQP_ERRORS)


class Malformed(Exception):
    """The message is refused; `reason` says why (the dead letter's header, the error reply's reason)."""

    def __init__(self, reason: str, *, user: Any = None, reply_queue: str = "") -> None:
        super().__init__(reason)
        self.reason = reason[:500]
        self.user = user if isinstance(user, dict) else {}
        self.reply_queue = reply_queue


@dataclass(frozen=True)
class IntakeMessage:
    action: str  # our SyncJob action
    reply_action: str  # create_card / update_card / move_card
    external_id: str
    fields: dict[str, Any]
    user: dict[str, Any]  # as sent: what the replies show
    reply_queue: str


def parse_message(body: bytes) -> IntakeMessage:
    """Read one message of the format above; Malformed (with the reply queue when it is known) otherwise."""
    try:
        message = parse_json_limited(body, what="message")
    except InputRejected as exc:
        raise Malformed(exc.reason) from None
    if not isinstance(message, dict):
        raise Malformed("the message must be a JSON object")
    data = message.get("data")
    if not isinstance(data, dict):
        raise Malformed("data must be an object")
    reply_queue = data.get("replyQueue", "")
    if reply_queue is None:
        reply_queue = ""
    if not isinstance(reply_queue, str) or len(reply_queue) > MAX_QUEUE_NAME or "\x00" in reply_queue:
        raise Malformed(f"replyQueue must be a queue name (at most {MAX_QUEUE_NAME} characters)")
    reply_queue = reply_queue.strip()
    user = data.get("user")
    pattern = message.get("pattern")
    if not isinstance(pattern, str) or pattern not in PATTERN_ACTIONS:
        raise Malformed(f"pattern must be one of {', '.join(PATTERN_ACTIONS)}", user=user, reply_queue=reply_queue)
    action = data.get("action", PATTERN_ACTIONS[pattern])
    if action != PATTERN_ACTIONS[pattern]:
        raise Malformed(f"action {str(action)[:40]!r} does not go with pattern {pattern} "
                        f"(expected {PATTERN_ACTIONS[pattern]})", user=user, reply_queue=reply_queue)
    if not isinstance(user, dict):
        raise Malformed("data.user must be an object", reply_queue=reply_queue)
    external_id = user.get("id")
    if isinstance(external_id, bool) or not isinstance(external_id, str | int) or str(external_id).strip() == "":
        raise Malformed("data.user.id is required (a string or an integer)", user=user, reply_queue=reply_queue)
    # The record's fields are what the API knows of the user object; other keys (the sender's own) only
    # travel back in the replies. A move carries the stage alone.
    names = ("stage",) if JOB_ACTIONS[action] == SyncJob.Action.MOVE else FIELDS
    fields = {name: user[name] for name in names if name in user and user[name] is not None}
    return IntakeMessage(action=JOB_ACTIONS[action], reply_action=action, external_id=str(external_id).strip(),
                         fields=fields, user=user, reply_queue=reply_queue)


def message_body(message: Message) -> bytes:
    body = message.body
    return bytes(body) if isinstance(body, bytes | bytearray) else str(body or "").encode()


def idempotency_key(message: Message) -> str:
    """Stable per message: its `message_id` property when the sender sets one (hashed when it is not a short
    printable ASCII word), else the body's hash (so a redelivery, or the same message published twice, is one
    job)."""
    message_id = (message.properties or {}).get("message_id")
    if isinstance(message_id, str) and message_id.strip():
        text = message_id.strip()
        if len(text) <= 150 and text.isascii() and text.isprintable() and " " not in text:
            return f"amqp:{text}"
        return "amqp-sha256:" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return "sha256:" + hashlib.sha256(message_body(message)).hexdigest()


def reason_of(exc: Rejected) -> str:
    """An intake refusal in the old service's words: "Missing phone number", "stage: unknown stage ..."."""
    if isinstance(exc, InvalidRecord):
        parts = []
        for name, problems in exc.field_errors.items():
            for problem in problems:
                parts.append(problem if problem[:1].isupper() or name == "non_field_errors" else f"{name}: {problem}")
        return "; ".join(parts)
    return str(exc)


def error_reply(reason: str, user: Mapping[str, Any]) -> dict[str, Any]:
    return {"status": "error", "reason": reason, "user": dict(user)}


# -- publishing ---------------------------------------------------------------------------------------


def amqp_connection(url: str | None = None) -> Connection:
    """A connection with publisher confirms: a publish returns once the broker has the message."""
    return Connection(url or settings.AMQP_URL, connect_timeout=CONNECT_TIMEOUT, heartbeat=0,
                      transport_options={"confirm_publish": True})


def dead_letter_exchange() -> Exchange:
    return Exchange(settings.AMQP_DEAD_LETTER_QUEUE, type="fanout", durable=True)


def dead_letter_queue() -> Queue:
    return Queue(settings.AMQP_DEAD_LETTER_QUEUE, exchange=dead_letter_exchange(), durable=True)


def declare_dead_letters(channel: Any) -> None:
    """The DLX (fanout) and the DLQ bound to it; idempotent."""
    dead_letter_queue().bind(channel).declare()


def ensure_queue(connection: Connection, queue: str) -> None:
    """A queue that does not exist yet is declared durable (a reply is then not dropped as unroutable; a
    bound queue is there for the sender); an existing queue is left as its owner declared it, arguments
    (TTL, dead-lettering, ...) and all: a passive check first, on a channel of its own."""
    channel: Any = connection.channel()
    try:
        channel.queue_declare(queue=queue, passive=True)
    except ChannelError:
        channel = connection.channel()  # the failed passive declare closed that channel
        channel.queue_declare(queue=queue, durable=True, auto_delete=False)
    finally:
        try:
            channel.close()
        except AMQP_ERRORS:
            logger.debug("reply-queue check channel already closed")


def publish_json(connection: Connection, queue: str, body: Mapping[str, Any], *, message_id: str = "",
                 headers: Mapping[str, Any] | None = None) -> None:
    """Publish one persistent JSON message to a queue through the default exchange (confirmed)."""
    ensure_queue(connection, queue)
    producer = Producer(connection.default_channel)
    properties: dict[str, Any] = {"message_id": message_id} if message_id else {}
    producer.publish(json.dumps(body, ensure_ascii=False).encode(), exchange="", routing_key=queue,
                     delivery_mode=2, content_type="application/json", content_encoding="utf-8",
                     headers=dict(headers or {}), retry=True, retry_policy={"max_retries": PUBLISH_RETRIES},
                     **properties)


def publish_dead_letter(connection: Connection, message: Message, *, queue: str, reason: str) -> None:
    """The refused message, body and properties unchanged, to the DLX with the reason and its queue."""
    properties = message.properties or {}
    headers = {**(message.headers or {}), REASON_HEADER: reason[:500], QUEUE_HEADER: queue}
    producer = Producer(connection.default_channel, exchange=dead_letter_exchange())
    extra: dict[str, Any] = {k: properties[k] for k in ("message_id", "correlation_id", "reply_to", "timestamp", "type", "app_id")
             if properties.get(k) is not None}
    producer.publish(message_body(message), routing_key=queue, delivery_mode=2,
                     content_type=message.content_type or "application/octet-stream",
                     content_encoding=message.content_encoding or "binary", headers=headers,
                     retry=True, retry_policy={"max_retries": PUBLISH_RETRIES}, declare=[dead_letter_queue()],
                     **extra)


def deliver_reply(reply: Reply) -> None:
    """The `amqp` deliverer: the reply's body to its queue, with the delivery id as `message_id`. A broker
    that cannot be reached or refuses the publish is worth another try later (DeliveryError retryable)."""
    if not settings.AMQP_URL:
        raise DeliveryError("AMQP_URL is not set: AMQP replies cannot be delivered", retryable=True)
    try:
        with amqp_connection() as connection:
            connection.ensure_connection(max_retries=1)
            publish_json(connection, reply.target, reply.body, message_id=str(reply.delivery_id))
    except AMQP_ERRORS as exc:
        raise DeliveryError(f"reply queue {reply.target!r} not reached: {type(exc).__name__}: "
                            f"{str(exc)[:150]}", retryable=True) from None


def check_amqp_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Start-up checks (`manage.py check`): AMQP_URL is an amqp(s) URL when set; the names and the poll
    interval are usable."""
    problems: list[Any] = []
    url = urlsplit(settings.AMQP_URL)
    if settings.AMQP_URL and (url.scheme not in ("amqp", "amqps") or not url.hostname):
        problems.append(Error("AMQP_URL must be an amqp:// or amqps:// URL (amqp://user:password@host:5672/vhost)",
                              id="records.E101"))
    if not QUEUE_NAME_RE.match(settings.AMQP_DEAD_LETTER_QUEUE) or settings.AMQP_DEAD_LETTER_QUEUE.startswith("amq."):
        problems.append(Error("AMQP_DEAD_LETTER_QUEUE must be a queue name (letters, digits, . _ - : / @; not amq.*)",
                              id="records.E102"))
    if settings.RECORDS_OFFLINE_POLL_SECONDS <= 0:
        problems.append(Error("RECORDS_OFFLINE_POLL_SECONDS must be a positive number", id="records.E103"))
    return problems


# -- the consumer -------------------------------------------------------------------------------------


@dataclass
class Outcome:
    acked: int = 0
    accepted: int = 0
    duplicates: int = 0
    dead_lettered: int = 0
    requeued: int = 0


class IntakeConsumer:
    """Consumes the enabled bindings' queues until `stop()` says so; reloads the bindings every
    `reload_seconds` (staff bind, unbind or disable a queue without a restart). `after_store(job)` runs after
    a job is stored and before the ack (tests use it to kill the consumer there)."""

    def __init__(self, url: str | None = None, *, prefetch: int = 20, reload_seconds: float = 30.0,
                 poll_seconds: float = 1.0, after_store: Callable[[SyncJob], None] | None = None) -> None:
        self.url = url or settings.AMQP_URL
        self.prefetch = prefetch
        self.reload_seconds = reload_seconds
        self.poll_seconds = poll_seconds
        self.after_store = after_store
        self.outcome = Outcome()
        self._bindings: dict[str, tuple[int, int]] = {}  # queue → (binding id, portal id)

    def run(self, stop: Callable[[], bool] = lambda: False, *, reconnect_seconds: float = 5.0) -> Outcome:
        while not stop():
            try:
                with amqp_connection(self.url) as consuming, amqp_connection(self.url) as publishing:
                    self._serve(consuming, publishing, stop)
            except RETRY_LATER_ERRORS as exc:
                # The broker or the database is away: unacked deliveries go back to their queues with the
                # connection; start again in a moment.
                logger.warning("AMQP consumer restarting", extra={"error": f"{type(exc).__module__}.{type(exc).__name__}"})
                close_old_connections()
                if stop():
                    break
                time.sleep(reconnect_seconds)
        return self.outcome

    def _load_bindings(self) -> dict[str, tuple[int, int]]:
        close_old_connections()
        rows = AmqpBinding.objects.filter(enabled=True, portal__status=Portal.Status.ACTIVE).values_list(
            "queue", "pk", "portal_id")
        return {queue: (pk, portal_id) for queue, pk, portal_id in rows}

    def _serve(self, consuming: Connection, publishing: Connection, stop: Callable[[], bool]) -> None:
        consuming.ensure_connection(max_retries=3)
        publishing.ensure_connection(max_retries=3)
        declare_dead_letters(publishing.default_channel)
        while not stop():
            self._bindings = self._load_bindings()
            channel: Any = consuming.channel()
            channel.basic_qos(prefetch_size=0, prefetch_count=self.prefetch, a_global=False)
            consumers = []
            for queue in sorted(self._bindings):
                try:
                    ensure_queue(consuming, queue)
                except ChannelError as exc:  # e.g. access refused: the other queues are still read
                    logger.warning("AMQP queue not consumed", extra={"queue": queue, "error": str(exc)[:200]})
                    continue
                consumer = Consumer(channel, queues=[Queue(queue, no_declare=True)],
                                    on_message=self._on_message_for(queue, publishing), accept=[])
                consumer.consume()
                consumers.append(consumer)
            reload_at = time.monotonic() + self.reload_seconds
            try:
                while not stop() and time.monotonic() < reload_at:
                    try:
                        consuming.drain_events(timeout=self.poll_seconds)
                    except TimeoutError:
                        pass
            finally:
                for consumer in consumers:
                    consumer.cancel()
                channel.close()  # unacked deliveries of this channel go back to their queues

    def _on_message_for(self, queue: str, publishing: Connection) -> Callable[[Message], None]:
        def on_message(message: Message) -> None:
            self.handle(queue, message, publishing)
        return on_message

    def handle(self, queue: str, message: Message, publishing: Connection) -> None:
        binding = self._bindings.get(queue)
        if binding is None:  # unbound since the consumer started: leave it for whoever reads it now
            self._put_back(queue, message, "unbound")
            return
        binding_id, _portal_id = binding
        try:
            self._handle(binding_id, queue, message, publishing)
        except RETRY_LATER_ERRORS as exc:
            # Not the message's fault: it goes back to the queue and is read again later.
            close_old_connections()
            self._put_back(queue, message, type(exc).__name__)
        except Exception as exc:
            # A bug of ours must neither lose the message nor stop the queue behind it: it is parked in the
            # dead-letter queue with the error (staff can publish it again once the bug is fixed).
            logger.exception("AMQP message could not be handled", extra={"queue": queue})
            self._refuse(binding_id, queue, message, publishing,
                         f"not processed: {type(exc).__name__}: {str(exc)[:300]}", {}, "")

    def _put_back(self, queue: str, message: Message, why: str) -> None:
        logger.warning("AMQP message put back", extra={"queue": queue, "error": why})
        message.requeue()
        self.outcome.requeued += 1
        time.sleep(min(self.poll_seconds, 1.0))

    def _handle(self, binding_id: int, queue: str, message: Message, publishing: Connection) -> None:
        close_old_connections()
        binding = AmqpBinding.objects.select_related("portal").filter(
            pk=binding_id, enabled=True, portal__status=Portal.Status.ACTIVE).first()
        if binding is None:  # disabled, removed or its portal no longer active since the last reload
            self._put_back(queue, message, "binding not active")
            return
        portal = binding.portal
        with log_context(member_id=portal.member_id):
            try:
                parsed = parse_message(message_body(message))
            except Malformed as exc:
                self._refuse(binding_id, queue, message, publishing, exc.reason, exc.user, exc.reply_queue)
                return
            try:
                job, created = do_accept_job(
                    portal, action=parsed.action, external_id=parsed.external_id, fields=parsed.fields,
                    idempotency_key=idempotency_key(message), source=SyncJob.Source.AMQP,
                    reply_queue=parsed.reply_queue, reply_user=parsed.user)
            except Rejected as exc:  # the intake refused the record (invalid fields, unknown record)
                self._refuse(binding_id, queue, message, publishing, reason_of(exc), parsed.user,
                             parsed.reply_queue)
                return
            if self.after_store is not None:
                self.after_store(job)
            message.ack()
            self.outcome.acked += 1
            if created:
                self.outcome.accepted += 1
            else:
                self.outcome.duplicates += 1
            AmqpBinding.objects.filter(pk=binding_id).update(
                accepted_count=F("accepted_count") + int(created), last_message_at=timezone.now())

    def _refuse(self, binding_id: int, queue: str, message: Message, publishing: Connection, reason: str,
                user: Mapping[str, Any], reply_queue: str) -> None:
        publish_dead_letter(publishing, message, queue=queue, reason=reason)
        if reply_queue:
            publish_json(publishing, reply_queue, error_reply(reason, user))
        message.ack()
        self.outcome.acked += 1
        self.outcome.dead_lettered += 1
        logger.info("AMQP message dead-lettered", extra={"queue": queue, "reason": reason[:200]})
        AmqpBinding.objects.filter(pk=binding_id).update(
            rejected_count=F("rejected_count") + 1, last_message_at=timezone.now(), last_rejection=reason[:500])
