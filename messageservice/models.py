"""Provider accounts (a portal's credentials at one carrier, registered in the portal as one Bitrix24
sender), the messages that go through them, the CRM items each message belongs to, and per-phone consent.

Two status axes on a message (never mixed):

* `state`: where the message is in OUR pipeline (accepted → sending → handed to the carrier, or failed,
  needs_review, cancelled). Only the send task, the sweeper and staff actions change it.
* `status`: the normalized DELIVERY status (`status.DeliveryStatus`, exactly Bitrix24's vocabulary),
  moved forward only by `advance_status`; `carrier_status` keeps the carrier's raw word next to it.
  `push_due` flags a status Bitrix24 has not been told yet (`pushed_status` is the last one it was).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from b24portal.crypto import EncryptedJSONField
from tenants.models import Portal

from .carriers import CARRIER_CHOICES, Carrier, get_carrier
from .status import RANK, UNSUCCESSFUL, DeliveryStatus, behind, display_status

#: Bitrix24's rule for a sender CODE: a-z A-Z 0-9 . - _
#: (bitrix24/b24restdocs api-reference/messageservice/messageservice-sender-add.md)
SENDER_CODE_RE = re.compile(r"^[a-zA-Z0-9._-]{1,50}$")
sender_code_validator = RegexValidator(SENDER_CODE_RE, _("Only a-z A-Z 0-9 . - _ (at most 50 characters)."))


class ProviderAccount(models.Model):
    """One portal's account at one carrier = one sender in that portal's Bitrix24 (by `code`)."""

    class Registration(models.TextChoices):
        PENDING = "pending", _("Not registered yet")
        REGISTERED = "registered", _("Registered")
        FAILED = "failed", _("Registration failed")
        REMOVED = "removed", _("Removed from Bitrix24")

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="sms_accounts")
    carrier = models.CharField(max_length=20, choices=CARRIER_CHOICES)
    code = models.CharField(max_length=50, validators=[sender_code_validator],
                            help_text=_("Sender CODE in Bitrix24; unique within the portal"))
    name = models.CharField(max_length=100, help_text=_("Sender name shown in Bitrix24"))
    sender = models.CharField(max_length=64, blank=True, help_text=_("Sender id / from number at the carrier"))
    base_url = models.URLField(max_length=300, blank=True, help_text=_("Carrier API base URL override"))
    credentials = EncryptedJSONField(default=dict, blank=True)
    options = models.JSONField(default=dict, blank=True,
                               help_text=_("Carrier options, e.g. sandbox delivery_delay / failure_rate"))
    is_active = models.BooleanField(default=True)

    # What Bitrix24 has, as far as we know: the CODE and HANDLER we last registered successfully.
    registration_state = models.CharField(max_length=12, choices=Registration.choices,
                                          default=Registration.PENDING)
    registered_code = models.CharField(max_length=50, blank=True)
    registered_handler = models.CharField(max_length=300, blank=True)
    registration_error = models.CharField(max_length=500, blank=True)
    registered_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["portal_id", "code"]
        constraints = [models.UniqueConstraint(fields=["portal", "code"], name="sms_account_code_unique_per_portal")]
        indexes = [models.Index(fields=["portal", "is_active"], name="sms_account_portal_active")]

    def __str__(self) -> str:
        return f"{self.code} ({self.get_carrier_display()})"

    def get_carrier(self) -> Carrier:
        return get_carrier(self.carrier, credentials=self.credentials or {}, sender=self.sender,
                           base_url=self.base_url or None, options=self.options or {})


def forward_status_fields(status: DeliveryStatus | str, *, raw_status: str = "", error: str | None = None,
                          now: datetime | None = None) -> dict[str, Any]:
    """The columns a forward move to `status` writes, each as a CASE on "is it forward for this row?", so a
    status move can ride in another UPDATE of the same rows (the send task's outcome) instead of its own
    statements. A row whose status is already at or past `status` keeps its values. `push_due` is set for a
    moved message Bitrix24 knows whose status it has not been told yet."""
    status = DeliveryStatus(status)
    now = now or timezone.now()
    moves = Q(status__isnull=True) | Q(status__in=behind(status))
    values: dict[str, Any] = {"status": Value(status.value), "status_changed_at": Value(now)}
    if raw_status:
        values["carrier_status"] = Value(raw_status[:64])
    if error:
        values["last_error"] = Value(error[:500])
    if RANK[status] == max(RANK.values()):
        values.update(final_at=Value(now), next_poll_at=Value(None, output_field=models.DateTimeField()))
    fields: dict[str, Any] = {column: Case(When(moves, then=value), default=F(column))
                              for column, value in values.items()}
    fields["push_due"] = Case(
        When(moves & Q(origin__in=Message.BITRIX24_ORIGINS) & ~Q(pushed_status=status.value), then=Value(True)),
        default=F("push_due"))
    return fields


class MessageQuerySet(models.QuerySet["Message"]):
    def advance_status(self, status: DeliveryStatus | str, *, raw_status: str = "", error: str | None = None,
                       now: datetime | None = None, extra: Mapping[str, Any] | None = None) -> int:
        """Move the delivery status of these messages forward (never back: Bitrix24 would accept a late
        `sent` over `delivered`). One conditional UPDATE for the whole group, so concurrent pollers cannot
        regress it. Marks `push_due` for messages Bitrix24 knows (unless it was already told this status),
        sets `final_at` and stops polling on a final status. Returns how many moved."""
        status = DeliveryStatus(status)
        now = now or timezone.now()
        fields: dict[str, Any] = {"status": status, "status_changed_at": now, "updated_at": now, **(extra or {})}
        if raw_status:
            fields["carrier_status"] = raw_status[:64]
        if error:
            fields["last_error"] = error[:500]
        if RANK[status] == max(RANK.values()):
            fields.update(final_at=now, next_poll_at=None)
        # push_due in the same statement: only the rows this UPDATE moves are considered.
        fields["push_due"] = Case(
            When(Q(origin__in=Message.BITRIX24_ORIGINS) & ~Q(pushed_status=status.value), then=Value(True)),
            default=F("push_due"))
        return self.filter(Q(status__isnull=True) | Q(status__in=behind(status))).update(**fields)


class Message(models.Model):
    class State(models.TextChoices):
        ACCEPTED = "accepted", _("Accepted")
        RETRYING = "retrying", _("Waiting to retry")
        SENDING = "sending", _("Sending")
        HANDED_TO_CARRIER = "sent_to_carrier", _("Handed to carrier")
        FAILED = "failed", _("Failed")
        NEEDS_REVIEW = "needs_review", _("Needs review")
        CANCELLED = "cancelled", _("Cancelled")

    class Origin(models.TextChoices):
        CRM = "crm", _("CRM card")
        BIZPROC = "bizproc", _("Workflow / automation")
        OTHER = "other", _("Bitrix24 (other module)")
        WIDGET = "widget", _("Our widget")
        TEST = "test", _("Staff test")

    #: states from which the send task may claim the message
    SENDABLE = (State.ACCEPTED, State.RETRYING)
    #: origins whose message Bitrix24 knows (so a status can be pushed to it)
    BITRIX24_ORIGINS = (Origin.CRM, Origin.BIZPROC, Origin.OTHER)

    # No index of its own: sms_msg_portal_created, sms_msg_author and the unique constraint start with it.
    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="sms_messages", db_index=False)
    account = models.ForeignKey(ProviderAccount, on_delete=models.PROTECT, related_name="messages")
    # Denormalized from the account at accept time: admin filters and statistics without a join, and the
    # carrier the message actually went through even if the account is switched later.
    carrier = models.CharField(max_length=20, choices=CARRIER_CHOICES)
    message_id = models.CharField(max_length=64, help_text=_("Bitrix24's message_id (32 hex)"))
    origin = models.CharField(max_length=10, choices=Origin.choices)
    recipient_raw = models.CharField(max_length=64, help_text=_("message_to as Bitrix24 sent it"))
    recipient = models.CharField(max_length=20, blank=True, help_text=_("E.164, once normalized"))
    body = models.TextField()
    author_user_id = models.PositiveIntegerField(null=True, blank=True)
    bindings = models.JSONField(default=list, blank=True, help_text=_("[{OWNER_TYPE_ID, OWNER_ID}, ...]"))
    meta = models.JSONField(default=dict, blank=True, help_text=_("module_id, workflow_id, document_id, ts ..."))
    # Widget sends: the key the frame page generated once per submission (Idempotency-Key); a repeat of the
    # same key returns this message instead of sending a second SMS. Empty for every other origin.
    client_key = models.CharField(max_length=64, blank=True, default="")

    # -- our pipeline
    state = models.CharField(max_length=16, choices=State.choices, default=State.ACCEPTED)
    attempts = models.PositiveSmallIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    send_deadline_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # The transactional outbox of the handler path: True from the INSERT that stored the message until a
    # dispatcher (messageservice.outbox, in the SMS worker) has published its send task, so the publish is
    # not paid inside Bitrix24's request and a crash between the commit and the publish loses nothing.
    dispatch_pending = models.BooleanField(default=False)

    # -- delivery status (poll and push work on these)
    # NULL = the carrier has not reported anything yet (distinct from every DeliveryStatus; is_forward(None, x))
    status = models.CharField(max_length=12, choices=DeliveryStatus.choices, null=True, blank=True)  # noqa: DJ001
    carrier_status = models.CharField(max_length=64, blank=True)
    carrier_message_id = models.CharField(max_length=128, blank=True)
    cost = models.CharField(max_length=20, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    final_at = models.DateTimeField(null=True, blank=True)
    next_poll_at = models.DateTimeField(null=True, blank=True)
    poll_attempts = models.PositiveSmallIntegerField(default=0)
    pushed_status = models.CharField(max_length=12, blank=True, help_text=_("Last status Bitrix24 accepted"))
    push_due = models.BooleanField(default=False)
    push_attempts = models.PositiveSmallIntegerField(default=0)
    pushed_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MessageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            # The idempotency key: Bitrix24 never redelivers, but a repeated or concurrent POST must not
            # create a second row (and so never a second send).
            models.UniqueConstraint(fields=["portal", "message_id"], name="sms_message_unique_per_portal"),
            # A widget submission repeated (second click, a retry after an error) is one message.
            models.UniqueConstraint(fields=["portal", "client_key"], name="sms_message_client_key_per_portal",
                                    condition=~Q(client_key="")),
        ]
        # Every index names the query it serves (issue 15: each index costs every insert and update).
        # Besides these: the primary key (claims and every per-message update, the push bookkeeping's
        # `UPDATE ... FROM (VALUES ...)` joins on it), sms_message_unique_per_portal above (the idempotent
        # accept; portal-scoped lookups by message_id) and account_id's foreign-key index (the PROTECT check
        # when an account is deleted). portal_id has no index of its own (db_index=False): portal-scoped
        # queries use the indexes that start with it. Dropped in 0004: (state, -created_at) and
        # (status, -created_at), used by no query but the admin's filters, where low-selectivity statuses
        # misled the planner (the push UPDATEs ran on sms_msg_status_created), and the portal_id index.
        indexes = [
            # Admin message list (all portals, newest first) and delivery statistics over a window of days.
            models.Index(fields=["-created_at"], name="sms_msg_created"),
            # Per portal, newest first: admin portal filter, the app page's chart, the purge's daily counts.
            models.Index(fields=["portal", "-created_at"], name="sms_msg_portal_created"),
            # "My messages" of a Bitrix24 user (sending.messages_by_author; the SMS API).
            models.Index(fields=["portal", "author_user_id", "-created_at"], name="sms_msg_author"),
            # Admin search by phone number (exact, E.164).
            models.Index(fields=["recipient"], name="sms_msg_recipient"),
            # Admin search by the carrier's message id.
            models.Index(fields=["carrier_message_id"], name="sms_msg_carrier_id",
                         condition=~Q(carrier_message_id="")),
            # Admin filter on the states staff act on (failed, needs review): few rows, newest first.
            models.Index(fields=["-created_at"], name="sms_msg_needs_staff",
                         condition=Q(state__in=["failed", "needs_review"])),
            # Poller: "not final and due" (final rows have next_poll_at = NULL, so the index stays small).
            models.Index(fields=["next_poll_at"], name="sms_msg_poll_due", condition=Q(next_poll_at__isnull=False)),
            # Pusher: per portal, statuses Bitrix24 has not been told yet (dispatch and the batch read).
            models.Index(fields=["portal", "status_changed_at"], name="sms_msg_push_due",
                         condition=Q(push_due=True)),
            # Outbox dispatcher: the handler's messages whose send is not published yet, oldest first (a
            # handful of rows at any time; `SELECT ... FOR UPDATE SKIP LOCKED` of messageservice.outbox).
            models.Index(fields=["id"], name="sms_msg_dispatch_pending", condition=Q(dispatch_pending=True)),
            # Sweepers: stale claims and lost dispatches.
            models.Index(fields=["claimed_at"], name="sms_msg_sending", condition=Q(state="sending")),
            models.Index(fields=["next_attempt_at"], name="sms_msg_waiting",
                         condition=Q(state__in=["accepted", "retrying"])),
        ]

    def __str__(self) -> str:
        return f"{self.message_id} ({self.state})"

    @staticmethod
    def is_failed_send(state: str, status: str | None) -> bool:
        """A send that failed with us or at the carrier (dashboard and metrics count the same thing)."""
        return state == Message.State.FAILED or status in UNSUCCESSFUL

    @staticmethod
    def failed_send_q() -> Q:
        """`is_failed_send` as a filter."""
        return Q(state=Message.State.FAILED) | Q(status__in=sorted(UNSUCCESSFUL))

    @property
    def known_to_bitrix24(self) -> bool:
        """Bitrix24 has this message (it came through the handler), so its status can be pushed."""
        return self.origin in self.BITRIX24_ORIGINS

    @property
    def display_status(self) -> str:
        """The delivery status, or (none yet) where the message is in our pipeline, as a status word."""
        return display_status(self.status, self.state)

    def advance_status(self, status: DeliveryStatus | str, **kwargs: Any) -> bool:
        """`MessageQuerySet.advance_status` for this message (the stored row, not this copy); True if it
        moved."""
        return bool(Message.objects.filter(pk=self.pk).advance_status(status, **kwargs))


class MessageCrmLink(models.Model):
    """A CRM item a message belongs to (the handler's `bindings`, or derived from a workflow's
    document_id): an indexed table so "messages of this deal" is one index range scan. (The database
    keeps the index and constraint names from when this was MessageBinding: renaming them buys nothing.)"""

    message = models.ForeignKey(Message, on_delete=models.CASCADE, related_name="crm_links")
    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="+")
    owner_type_id = models.PositiveIntegerField()
    owner_id = models.PositiveBigIntegerField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["message", "owner_type_id", "owner_id"],
                                               name="sms_binding_unique")]
        indexes = [models.Index(fields=["portal", "owner_type_id", "owner_id"], name="sms_binding_item")]

    def __str__(self) -> str:
        return f"{self.owner_type_id}:{self.owner_id}"


class PhoneConsent(models.Model):
    """Whether a phone number agreed to (or refused) SMS from this portal. No row = no decision."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="sms_consents")
    phone = models.CharField(max_length=20, help_text=_("E.164"))
    opted_in = models.BooleanField()
    changed_at = models.DateTimeField(default=timezone.now)
    changed_by_user_id = models.PositiveIntegerField(null=True, blank=True)
    source = models.CharField(max_length=50, help_text=_("widget, staff, import, reply STOP, ..."))

    class Meta:
        constraints = [models.UniqueConstraint(fields=["portal", "phone"], name="sms_consent_unique_phone")]

    def __str__(self) -> str:
        return f"{self.phone}: {'opted in' if self.opted_in else 'opted out'}"


def as_bindings(value: Any) -> list[dict[str, int]]:
    """Normalize [{OWNER_TYPE_ID, OWNER_ID}] (ints or numeric strings) and drop duplicates."""
    out: list[dict[str, int]] = []
    seen: set[tuple[int, int]] = set()
    for item in value or []:
        pair = (int(item["OWNER_TYPE_ID"]), int(item["OWNER_ID"]))
        if pair not in seen:
            seen.add(pair)
            out.append({"OWNER_TYPE_ID": pair[0], "OWNER_ID": pair[1]})
    return out


class PurgedDailyCount(models.Model):
    """What is kept of a purged portal's messages (uninstall with CLEAN=1): counts per day, carrier and
    delivery status, with no phone, text or CRM link."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="sms_purged_counts")
    day = models.DateField()
    carrier = models.CharField(max_length=20)
    status = models.CharField(max_length=20, blank=True)
    count = models.PositiveIntegerField()
    purged_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["portal", "day"], name="sms_purged_portal_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.carrier} {self.status or '-'}: {self.count}"
