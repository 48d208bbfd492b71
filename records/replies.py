"""Replies: what every finished job (and every CRM change of a record) owes its caller, as an outbox.

`do_queue_replies(job, record, body)` writes one `Reply` per destination — the HTTP callback of the job's
API key (if it has one) and the job's AMQP reply queue (if it named one) — and dispatches their delivery
once that commits. Delivery is by kind through `DELIVERERS`: this module registers `http`; the AMQP
intake registers `amqp` (`register_deliverer`). A deliverer raises `DeliveryError(reason, retryable=...)`;
a retryable failure is tried again with back-off (at most RECORDS_REPLY_MAX_ATTEMPTS attempts), anything
else marks the reply failed where staff see it. Every body carries its `delivery_id`, so a receiver can drop
a duplicate (delivery is at least once: a worker that died after POSTing is not sure it did).

HTTP callbacks: `POST <callback_url>` with the JSON body, `X-B24Portal-Delivery: <delivery_id>` and
`X-B24Portal-Signature: sha256=<hex HMAC-SHA256 of the raw body with the key's callback secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import requests
from celery import Task, shared_task
from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit, redispatch_late
from b24portal.http import get_session

from .models import Record, Reply, SyncJob

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-B24Portal-Signature"
DELIVERY_HEADER = "X-B24Portal-Delivery"


class DeliveryError(Exception):
    """A reply could not be delivered; `retryable` says whether trying again later may succeed."""

    def __init__(self, reason: str, *, retryable: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable


Deliverer = Callable[[Reply], None]
DELIVERERS: dict[str, Deliverer] = {}


def register_deliverer(kind: str, deliverer: Deliverer) -> None:
    """Deliver replies of `kind` (a `Reply.Kind` value) with `deliverer(reply)`; raises DeliveryError."""
    DELIVERERS[kind] = deliverer


def encode_body(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode()


def sign(secret: str, raw: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def deliver_http(reply: Reply) -> None:
    raw = encode_body(reply.body)
    headers = {"Content-Type": "application/json", DELIVERY_HEADER: str(reply.delivery_id)}
    secret = reply.api_key.callback_secret if reply.api_key is not None else ""
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, raw)
    try:
        response = get_session().post(reply.target, data=raw, headers=headers, allow_redirects=False,
                                      timeout=(5.0, float(settings.RECORDS_CALLBACK_TIMEOUT)))
    except requests.RequestException as exc:
        raise DeliveryError(f"callback not reached: {type(exc).__name__}", retryable=True) from None
    if 200 <= response.status_code < 300:
        return
    # A server error, a timeout answer or "too many": later may work; another 4xx will not change by itself.
    retryable = response.status_code >= 500 or response.status_code in (408, 425, 429)
    raise DeliveryError(f"callback answered HTTP {response.status_code}", retryable=retryable)


register_deliverer(Reply.Kind.HTTP, deliver_http)


# -- bodies ---------------------------------------------------------------------------------------------
def job_reply_body(job: SyncJob) -> dict[str, Any]:
    """The issue's reply format: success with the lead id, or error with the reason; plus the job id."""
    if job.state == SyncJob.State.SUCCEEDED:
        return {"status": "success", "action": job.reply_action, "user": job.reply_user,
                "bitrix_lead_id": job.lead_id, "job_id": job.pk}
    reason = job.last_error or ("cancelled by staff" if job.state == SyncJob.State.CANCELLED else "failed")
    return {"status": "error", "reason": reason, "action": job.reply_action, "user": job.reply_user,
            "job_id": job.pk}


def do_queue_replies(job: SyncJob | None, record: Record, body: dict[str, Any]) -> list[Reply]:
    """One Reply per destination of `job` (or, without a job, of the record's last job); delivery is
    dispatched once the transaction commits. Returns the replies (none when nobody asked for one)."""
    api_key = job.api_key if job is not None else record.api_key
    queue = job.reply_queue if job is not None else record.reply_queue
    targets: list[tuple[str, str]] = []
    if api_key is not None and api_key.callback_url:
        targets.append((Reply.Kind.HTTP, api_key.callback_url))
    if queue:
        targets.append((Reply.Kind.AMQP, queue))
    if not targets:
        return []
    now = timezone.now()
    replies = []
    for kind, target in targets:
        delivery_id = uuid.uuid4()
        full = {**body, "delivery_id": str(delivery_id)}
        if job is not None:
            full.setdefault("job_id", job.pk)
        replies.append(Reply(portal_id=record.portal_id, job=job, record=record, api_key=api_key, kind=kind,
                             target=target, body=full, delivery_id=delivery_id, next_attempt_at=now,
                             created_at=now))
    with transaction.atomic():
        created = Reply.objects.bulk_create(replies)
        for reply in created:
            dispatch_on_commit(deliver_reply, reply.pk)
    return created


# -- delivery -------------------------------------------------------------------------------------------
def reply_backoff(attempts: int) -> float:
    """5 s, 10 s, 20 s ... at most an hour, with jitter."""
    return min(5.0 * 2 ** max(attempts - 1, 0), 3600.0) * random.uniform(0.8, 1.2)


@shared_task(bind=True, max_retries=None, acks_late=True)
def deliver_reply(self: Task, reply_id: int) -> str:
    """Claim the reply (pending and due → sending, one conditional UPDATE: a duplicate dispatch does
    nothing), deliver it, settle it. A retryable failure puts it back with a later `next_attempt_at` and a
    countdown task; if that publish is lost, the sweeper dispatches it."""
    now = timezone.now()
    claimed = Reply.objects.filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=now),
                                   pk=reply_id, state=Reply.State.PENDING).update(
        state=Reply.State.SENDING, attempts=F("attempts") + 1, claimed_at=now)
    if claimed != 1:
        return "not claimable"
    reply = Reply.objects.select_related("api_key").get(pk=reply_id)
    deliverer = DELIVERERS.get(reply.kind)
    try:
        if deliverer is None:
            raise DeliveryError(f"no deliverer for {reply.kind} replies in this process", retryable=True)
        deliverer(reply)
    except Exception as exc:  # a deliverer's own bug is retried like an unreachable target, and shown
        error = exc if isinstance(exc, DeliveryError) else DeliveryError(
            f"{type(exc).__name__}: {str(exc)[:200]}", retryable=True)
        message = f"attempt {reply.attempts}: {error.reason}"[:500]
        if error.retryable and reply.attempts < settings.RECORDS_REPLY_MAX_ATTEMPTS:
            delay = reply_backoff(reply.attempts)
            Reply.objects.filter(pk=reply.pk, state=Reply.State.SENDING).update(
                state=Reply.State.PENDING, claimed_at=None, last_error=message,
                next_attempt_at=timezone.now() + timedelta(seconds=delay))
            deliver_reply.apply_async(args=(reply.pk,), countdown=delay)  # eager: runs now, finds it not due
            return "retry later"
        Reply.objects.filter(pk=reply.pk, state=Reply.State.SENDING).update(
            state=Reply.State.FAILED, claimed_at=None, last_error=message)
        logger.warning("reply failed", extra={"reply": reply.pk, "kind": reply.kind, "reason": error.reason})
        return "failed"
    Reply.objects.filter(pk=reply.pk, state=Reply.State.SENDING).update(
        state=Reply.State.DELIVERED, claimed_at=None, last_error="", delivered_at=timezone.now())
    return "delivered"


@shared_task
def redispatch_replies() -> int:
    """Beat: replies owed whose task was lost (broker down, a countdown never published) are dispatched
    again RECORDS_REDISPATCH_AFTER_SECONDS after they fell due; a claim older than
    RECORDS_CLAIM_TIMEOUT_SECONDS (the worker died mid-delivery) is put back to pending: delivery is at least
    once, and the body's delivery_id lets the receiver drop the duplicate."""
    now = timezone.now()
    Reply.objects.filter(state=Reply.State.SENDING,
                         claimed_at__lt=now - timedelta(seconds=settings.RECORDS_CLAIM_TIMEOUT_SECONDS)).update(
        state=Reply.State.PENDING, claimed_at=None, next_attempt_at=now)
    late = now - timedelta(seconds=settings.RECORDS_REDISPATCH_AFTER_SECONDS)
    due = Reply.objects.filter(state=Reply.State.PENDING, next_attempt_at__lt=late)
    return redispatch_late(due, "next_attempt_at", deliver_reply, now=now)


def do_retry_replies(replies: Any) -> int:
    """Staff: send failed replies again (attempts start over)."""
    with transaction.atomic():
        ids = list(replies.filter(state=Reply.State.FAILED).values_list("pk", flat=True))
        Reply.objects.filter(pk__in=ids).update(state=Reply.State.PENDING, attempts=0,
                                                next_attempt_at=timezone.now())
        for pk in ids:
            dispatch_on_commit(deliver_reply, pk)
    return len(ids)
