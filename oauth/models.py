"""Per portal and Bitrix24 user OAuth tokens, encrypted at rest."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.db import models
from django.db.models import Q
from django.utils import timezone

from b24portal.crypto import EncryptedTextField

# Refresh a little before the stated expiry so a call does not start with a token about to die.
EXPIRY_SKEW = timedelta(seconds=60)


class PortalToken(models.Model):
    """A Bitrix24 user's token pair in one portal. The installing administrator's pair is the portal's
    service token (`is_service`), used by background work; frame tokens belong to whoever opened the frame."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="tokens")
    user_id = models.PositiveIntegerField()
    is_service = models.BooleanField(default=False)
    is_admin = models.BooleanField(null=True)
    access_token = EncryptedTextField()
    refresh_token = EncryptedTextField()
    expires_at = models.DateTimeField()
    scope = models.CharField(max_length=1000, blank=True)
    refreshed_at = models.DateTimeField(null=True, blank=True)
    refresh_count = models.PositiveIntegerField(default=0)
    last_refresh_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["portal", "user_id"], name="token_unique_portal_user"),
            models.UniqueConstraint(fields=["portal"], condition=Q(is_service=True), name="token_one_service"),
        ]

    def __str__(self) -> str:
        return f"user {self.user_id}{' (service)' if self.is_service else ''}"

    def is_expired(self, now: datetime | None = None) -> bool:
        return (now or timezone.now()) >= self.expires_at - EXPIRY_SKEW

    @property
    def scopes(self) -> list[str]:
        return [s for s in self.scope.replace(" ", ",").split(",") if s]


class RestCall(models.Model):
    """One HTTP request to a portal's REST API (a batch of 50 commands is one row, method "batch")."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="rest_calls")
    method = models.CharField(max_length=100)
    batch_size = models.PositiveSmallIntegerField(null=True, blank=True)
    http_status = models.PositiveSmallIntegerField(null=True, blank=True, help_text="None: no HTTP answer")
    error_code = models.CharField(max_length=64, blank=True, db_index=True, help_text="empty = success")
    duration_ms = models.PositiveIntegerField(default=0)
    operating = models.FloatField(null=True, blank=True, help_text="time.operating reported for the method")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "REST call"
        indexes = [
            models.Index(fields=["portal", "-created_at"], name="restcall_portal_created"),
            models.Index(fields=["created_at"], name="restcall_created"),
        ]

    def __str__(self) -> str:
        return f"{self.method} {self.http_status or '-'} {self.error_code or 'ok'}"


class RestCallCount(models.Model):
    """Routine successful calls of periodic checks, counted instead of logged row by row (issue 15: at
    10,000 portals the reconciles alone make ~60,000 calls an hour of "nothing changed"). Rolled up into
    RestCallDaily with the raw rows; failures and every call outside a periodic check keep their RestCall row.
    One row per (portal, day, method), incremented in place by `calllog.flush_counts`."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    method = models.CharField(max_length=100)
    calls = models.PositiveIntegerField(default=0)
    commands = models.PositiveIntegerField(default=0)
    total_duration_ms = models.BigIntegerField(default=0)
    max_duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = "REST calls counted (routine)"
        constraints = [models.UniqueConstraint(fields=["portal", "day", "method"], name="restcallcount_unique")]
        indexes = [models.Index(fields=["day"], name="restcallcount_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.method}: {self.calls}"


class RestCallDaily(models.Model):
    """Roll-up of RestCall per portal, day, method and error code (kept long after raw rows are pruned)."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="rest_call_days")
    day = models.DateField()
    method = models.CharField(max_length=100)
    error_code = models.CharField(max_length=64, blank=True, help_text="empty = success")
    calls = models.PositiveIntegerField(default=0)
    commands = models.PositiveIntegerField(default=0, help_text="batch commands (1 per plain call)")
    total_duration_ms = models.BigIntegerField(default=0)
    max_duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-day", "portal_id", "method"]
        verbose_name = "REST calls per day"
        verbose_name_plural = "REST calls per day"
        constraints = [
            models.UniqueConstraint(fields=["portal", "day", "method", "error_code"], name="restcalldaily_unique"),
        ]
        indexes = [models.Index(fields=["day"], name="restcalldaily_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.method} {self.error_code or 'ok'}: {self.calls}"

    @property
    def avg_duration_ms(self) -> int:
        return int(self.total_duration_ms / self.calls) if self.calls else 0


class PortalCapabilities(models.Model):
    """What a portal grants us: scopes, the methods the product needs, and features (last check)."""

    portal = models.OneToOneField("tenants.Portal", on_delete=models.CASCADE, related_name="capabilities")
    scopes = models.JSONField(default=list, blank=True)
    methods = models.JSONField(default=dict, blank=True, help_text='{"method": {"isExisting":…, "isAvailable":…}}')
    features = models.JSONField(default=dict, blank=True, help_text='{"rest_offline_extended": true, …}')
    missing = models.JSONField(default=list, blank=True, help_text="required scopes/methods the portal lacks")
    ok = models.BooleanField(default=False, db_index=True)
    error = models.CharField(max_length=255, blank=True, help_text="why the last check could not run")
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "portal capabilities"
        verbose_name_plural = "portal capabilities"

    def __str__(self) -> str:
        return f"capabilities of {self.portal_id}"

    def has_feature(self, code: str) -> bool:
        return bool(self.features.get(code))

    def has_method(self, method: str) -> bool:
        row = self.methods.get(method.lower()) or {}
        return bool(row.get("isExisting") and row.get("isAvailable"))


class WebhookCredential(models.Model):
    """The incoming webhook of a webhook-connected portal (`Portal.connection == "webhook"`): calls go to
    `<rest_endpoint><user_id>/<secret>/<method>.json` with the rights of that Bitrix24 user and the webhook's
    scopes. The secret is encrypted at rest and never leaves this row except in that URL."""

    portal = models.OneToOneField("tenants.Portal", on_delete=models.CASCADE, related_name="webhook")
    user_id = models.PositiveIntegerField(help_text="the Bitrix24 user who created the webhook")
    secret = EncryptedTextField()
    user_name = models.CharField(max_length=255, blank=True)
    is_admin = models.BooleanField(null=True, help_text="profile ADMIN when the webhook was proven")
    scopes = models.JSONField(default=list, blank=True, help_text="what `scope` answered through the webhook")
    verified_at = models.DateTimeField(help_text="last time profile and scope answered through it")
    refused_at = models.DateTimeField(null=True, blank=True, help_text="Bitrix24 refused the webhook (401)")
    refused_error = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "incoming webhook"

    def __str__(self) -> str:
        return f"webhook of user {self.user_id}"

    def endpoint(self, rest_endpoint: str) -> str:
        """The base every method is appended to: https://<portal>/rest/<user>/<secret>/."""
        return f"{rest_endpoint.rstrip('/')}/{self.user_id}/{self.secret}/"


class ParkedCall(models.Model):
    """Work that waits for a portal administrator to confirm a REST method for this application (spec §7:
    the call was answered 401 METHOD_CONFIRM_WAITING). Not a failure and not retried: ONAPPMETHODCONFIRM
    resumes it (CONFIRMED=1: `confirmed` until its task is dispatched again with its arguments, then
    `resumed`; a sweeper dispatches a `confirmed` one whose dispatch was lost) or fails it (0); one never
    decided fails after B24_METHOD_CONFIRM_TIMEOUT_HOURS. The grant is tied to the access token the call
    used, kept here only as a hash."""

    class State(models.TextChoices):
        WAITING = "waiting", "Waiting for an administrator"
        CONFIRMED = "confirmed", "Confirmed, to be resumed"  # owed: its task is dispatched (and swept) again
        RESUMED = "resumed", "Confirmed, resumed"
        FAILED = "failed", "Failed"

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="parked_calls")
    method = models.CharField(max_length=100)
    task_name = models.CharField(max_length=200, help_text="the Celery task resumed on confirmation")
    args = models.JSONField(default=list, blank=True)
    kwargs = models.JSONField(default=dict, blank=True)
    token_hash = models.CharField(max_length=64, help_text="SHA-256 of the access token the confirmation is for")
    state = models.CharField(max_length=10, choices=State.choices, default=State.WAITING)
    reason = models.CharField(max_length=500, blank=True)
    parked_at = models.DateTimeField(default=timezone.now)
    decided_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-parked_at", "-id"]
        verbose_name = "call waiting for method confirmation"
        verbose_name_plural = "calls waiting for method confirmation"
        indexes = [
            models.Index(fields=["portal", "method", "state"], name="parkedcall_portal_method"),
            models.Index(fields=["parked_at"], condition=Q(state="waiting"), name="parkedcall_waiting"),
        ]

    def __str__(self) -> str:
        return f"{self.method} for {self.task_name} ({self.state})"
