"""Records synced from an external system into Bitrix24 CRM leads: API keys, records, jobs, stage mapping,
and the reply outbox.

A job is the unit of work an intake (HTTP API, AMQP) stores: it is owed while `pending` (or `running` with
an old claim, see `records.tasks`), and every job that finishes queues its replies (`Reply`, an outbox with
one row per destination). Nothing is dispatched before its row is committed.
"""

from __future__ import annotations

import hashlib
import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from b24portal.crypto import EncryptedTextField


def hash_api_key(key: str) -> str:
    """SHA-256 of the key: keys are high-entropy random strings, so no salt or slow hash is needed."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class ApiKey(models.Model):
    """A portal's key for the records API (`Authorization: Bearer <key>`). Only its hash and a short prefix
    are stored; the key itself is shown once, when staff create it. Replies to the jobs it submitted go to
    `callback_url`, signed with `callback_secret` (encrypted at rest)."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="record_api_keys")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text=_("The key's first characters, to tell keys apart"))
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    callback_url = models.URLField(max_length=500, blank=True,
                                   help_text=_("Replies (job outcomes, CRM changes) are POSTed here as JSON"))
    callback_secret = EncryptedTextField(blank=True, default="",
                                         help_text=_("HMAC-SHA256 key of the X-B24Portal-Signature header"))
    created_at = models.DateTimeField(default=timezone.now)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["portal_id", "name"]
        verbose_name = _("API key")

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Outcome(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCESS = "success", _("Success")
    ERROR = "error", _("Error")


class Record(models.Model):
    """One object of the external system (`external_id`, the caller's id) and the lead it is synced to.
    The lead carries ORIGINATOR_ID / ORIGIN_ID, so it can be found again by them. `reply_queue` and
    `api_key` are where the last job wanted its reply: later notices about the record go there too."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="records")
    external_id = models.CharField(max_length=100)
    lead_id = models.PositiveBigIntegerField(null=True, blank=True, db_index=True)
    stage = models.CharField(max_length=50, blank=True, help_text=_("The external stage last applied"))
    last_outcome = models.CharField(max_length=10, choices=Outcome.choices, default=Outcome.PENDING)
    last_error = models.CharField(max_length=500, blank=True)
    reply_queue = models.CharField(max_length=255, blank=True)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="records")
    # What we last wrote to the lead (lead field names), so a CRM change event can tell our own write.
    last_written = models.JSONField(default=dict, blank=True)
    last_written_at = models.DateTimeField(null=True, blank=True)
    # Per multi-field (PHONE, EMAIL) the value we wrote and its ID in the lead, so a change replaces it.
    own_multifields = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [models.UniqueConstraint(fields=["portal", "external_id"], name="record_unique_per_portal")]
        indexes = [models.Index(fields=["portal", "lead_id"], name="record_portal_lead")]

    def __str__(self) -> str:
        return f"{self.external_id} → lead {self.lead_id or '—'}"


class SyncJob(models.Model):
    class Action(models.TextChoices):
        CREATE = "create", _("Create")
        UPDATE = "update", _("Update")
        MOVE = "move", _("Move")

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")
        CANCELLED = "cancelled", _("Cancelled")

    class Source(models.TextChoices):
        HTTP = "http", _("HTTP API")
        AMQP = "amqp", _("AMQP")

    FINAL_STATES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="sync_jobs")
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="jobs")
    action = models.CharField(max_length=10, choices=Action.choices)
    # The validated fields in our vocabulary (full_name, phone, stage, email, comment, extra).
    payload = models.JSONField(default=dict, blank=True)
    # What replies show as "user" (the record as the caller sent it).
    reply_user = models.JSONField(default=dict, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    deadline = models.DateTimeField()
    idempotency_key = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices, default=Source.HTTP)
    reply_queue = models.CharField(max_length=255, blank=True)
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="jobs")
    lead_id = models.PositiveBigIntegerField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["portal", "source", "idempotency_key"], name="syncjob_idempotency",
                                    condition=~models.Q(idempotency_key="")),
        ]
        indexes = [
            # The applier: a portal's owed jobs in order; finished jobs stay out of it.
            models.Index(fields=["portal", "id"], name="syncjob_owed",
                         condition=models.Q(state__in=["pending", "running"])),
            # The sweeper: owed jobs by due time across portals.
            models.Index(fields=["next_attempt_at"], name="syncjob_due",
                         condition=models.Q(state__in=["pending", "running"])),
            models.Index(fields=["record", "id"], name="syncjob_record"),
            models.Index(fields=["created_at"], name="syncjob_created"),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} {self.action} ({self.state})"

    @property
    def reply_action(self) -> str:
        return f"{self.action}_card"


class StageMapping(models.Model):
    """External stage name → the lead STATUS_ID (crm.status.list ENTITY_ID=STATUS). Loading from Bitrix24
    adds one row per status (external name = STATUS_ID); staff may rename the external side or add more."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="stage_mappings")
    external_stage = models.CharField(max_length=50)
    status_id = models.CharField(max_length=50, verbose_name=_("lead STATUS_ID"))
    status_name = models.CharField(max_length=255, blank=True, help_text=_("Its name in Bitrix24"))
    sort = models.IntegerField(default=0)
    loaded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["portal_id", "sort", "external_stage"]
        constraints = [models.UniqueConstraint(fields=["portal", "external_stage"], name="stage_unique_per_portal")]

    def __str__(self) -> str:
        return f"{self.external_stage} → {self.status_id}"


class Reply(models.Model):
    """Outbox: one reply owed to one destination (an HTTP callback URL or an AMQP reply queue)."""

    class Kind(models.TextChoices):
        HTTP = "http", _("HTTP callback")
        AMQP = "amqp", _("AMQP reply queue")

    class State(models.TextChoices):
        PENDING = "pending", _("Pending")
        SENDING = "sending", _("Sending")
        DELIVERED = "delivered", _("Delivered")
        FAILED = "failed", _("Failed")

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="record_replies")
    job = models.ForeignKey(SyncJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    record = models.ForeignKey(Record, on_delete=models.CASCADE, related_name="replies")
    api_key = models.ForeignKey(ApiKey, null=True, blank=True, on_delete=models.SET_NULL, related_name="replies")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    target = models.CharField(max_length=500, help_text=_("The callback URL or the queue name"))
    body = models.JSONField()
    delivery_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = _("replies")
        indexes = [
            models.Index(fields=["next_attempt_at"], name="reply_due",
                         condition=models.Q(state__in=["pending", "sending"])),
            models.Index(fields=["portal", "state"], name="reply_portal_state"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} reply {self.delivery_id} ({self.state})"


# The AMQP bindings and offline-event feeds live in channels.py; imported here so Django sees them.
from .channels import AmqpBinding, OfflineFeed  # noqa: E402, F401
