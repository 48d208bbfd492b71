"""The Portal (one Bitrix24 account, keyed by member_id), its journal and its install runs."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


def new_handler_key() -> str:
    """An unguessable per-portal key for the handler URLs we register (messageservice)."""
    return secrets.token_urlsafe(32)


def hash_application_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A webhook-connected portal has no member_id from an install: it gets this prefix + its domain. The colon
# never passes the member_id pattern of install frames and app events (b24portal.intake.MEMBER_ID_RE), so
# no Bitrix24 POST can ever name such a portal.
WEBHOOK_MEMBER_PREFIX = "webhook:"


def webhook_member_id(domain: str) -> str:
    domain = domain.strip().lower()
    if len(WEBHOOK_MEMBER_PREFIX) + len(domain) > 64:  # a cut-off name could collide; a hash cannot
        domain = hashlib.sha256(domain.encode()).hexdigest()[:56]
    return f"{WEBHOOK_MEMBER_PREFIX}{domain}"


class Portal(models.Model):
    class Status(models.TextChoices):
        NEW = "new", _("Installing")
        ACTIVE = "active", _("Active")
        BLOCKED = "blocked", _("Blocked")
        NEEDS_REINSTALL = "needs_reinstall", _("Needs reinstall")
        DELETED = "deleted", _("Uninstalled")

    class AppStatus(models.TextChoices):
        FREE = "F", _("Free")
        DEMO = "D", _("Demo")
        TRIAL = "T", _("Trial")
        PAID = "P", _("Paid")
        LOCAL = "L", _("Local")

    class RatePlan(models.TextChoices):
        STANDARD = "standard", _("Standard: 2 req/s, burst 50")
        ENTERPRISE = "enterprise", _("Enterprise: 5 req/s, burst 250")

    class Connection(models.TextChoices):
        APP = "app", _("Installed app")
        WEBHOOK = "webhook", _("Incoming webhook")

    # Bitrix24's documented leaky-bucket limits per plan: (requests per second, burst).
    RATE_LIMITS = {RatePlan.STANDARD: (2.0, 50), RatePlan.ENTERPRISE: (5.0, 250)}

    member_id = models.CharField(max_length=64, unique=True)
    domain = models.CharField(max_length=255, db_index=True)
    rest_endpoint = models.URLField(max_length=300, help_text=_("client_endpoint, e.g. https://x.bitrix24.com/rest/"))
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEW, db_index=True)
    # How we reach the portal: an installed app (OAuth tokens, events, widgets, SMS) or an incoming webhook
    # staff added by its URL (REST calls only; its member_id is WEBHOOK_MEMBER_PREFIX + domain).
    connection = models.CharField(max_length=10, choices=Connection.choices, default=Connection.APP,
                                  db_index=True)
    status_changed_at = models.DateTimeField(default=timezone.now)
    blocked_reason = models.CharField(max_length=255, blank=True)

    # From app.info (trusted), refreshed by "verify now" and daily.
    app_local_id = models.PositiveIntegerField(null=True, blank=True, help_text=_("app.info ID (rest_<ID>_...)"))
    app_code = models.CharField(max_length=100, blank=True)
    app_status = models.CharField(max_length=1, choices=AppStatus.choices, blank=True)
    app_installed = models.BooleanField(null=True, help_text=_("app.info INSTALLED: installFinish was called"))
    license = models.CharField(max_length=64, blank=True)
    license_type = models.CharField(max_length=64, blank=True)
    license_family = models.CharField(max_length=32, blank=True, db_index=True)
    payment_expired = models.BooleanField(default=False)
    payment_days = models.IntegerField(null=True, blank=True)
    app_info_checked_at = models.DateTimeField(null=True, blank=True)

    installed_version = models.PositiveIntegerField(null=True, blank=True)
    language = models.CharField(max_length=10, blank=True)
    phone_region = models.CharField(max_length=2, blank=True, help_text=_("Default region for phone numbers"))
    installed_by_user_id = models.PositiveIntegerField(null=True, blank=True)
    installed_by_name = models.CharField(max_length=255, blank=True)
    install_started_at = models.DateTimeField(null=True, blank=True)
    installed_at = models.DateTimeField(null=True, blank=True)
    uninstalled_at = models.DateTimeField(null=True, blank=True)

    # Only a hash is kept: the token is compared, never sent anywhere.
    application_token_hash = models.CharField(max_length=64, blank=True)
    # Counts installations (fresh installs and uninstalls): frame tokens carry it, so a token issued before
    # an uninstall is worthless after a reinstall.
    install_generation = models.PositiveIntegerField(default=1)
    handler_key = models.CharField(max_length=64, unique=True, default=new_handler_key)
    rate_plan = models.CharField(max_length=20, choices=RatePlan.choices, default=RatePlan.STANDARD)

    last_problem = models.CharField(max_length=500, blank=True)
    last_problem_at = models.DateTimeField(null=True, blank=True)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["domain"]
        indexes = [models.Index(fields=["status", "install_started_at"], name="portal_status_started")]

    def __str__(self) -> str:
        return self.domain or self.member_id

    @property
    def is_webhook(self) -> bool:
        """Connected by an incoming webhook: no app context (no events, widgets, SMS provider, tokens)."""
        return self.connection == self.Connection.WEBHOOK

    @property
    def is_operational(self) -> bool:
        """May we act for this portal (send SMS, call its REST API in the background)?"""
        return self.status == self.Status.ACTIVE

    @property
    def rest_rate_limit(self) -> tuple[float, int]:
        return self.RATE_LIMITS[self.RatePlan(self.rate_plan)]

    @property
    def origin(self) -> str:
        """The portal's web origin, e.g. https://x.bitrix24.com (for frame-ancestors)."""
        scheme = self.rest_endpoint.split("://", 1)[0] if "://" in self.rest_endpoint else "https"
        return f"{scheme}://{self.domain}"

    def application_token_matches(self, token: str | None) -> bool:
        if not token or not self.application_token_hash:
            return False
        return hmac.compare_digest(hash_application_token(token), self.application_token_hash)


class JournalEntry(models.Model):
    """One row per lifecycle transition, install step, staff action, token refresh or REST failure."""

    class Kind(models.TextChoices):
        LIFECYCLE = "lifecycle", _("Lifecycle")
        INSTALL_STEP = "install_step", _("Install step")
        STAFF = "staff", _("Staff action")
        EVENT = "event", _("Bitrix24 event")
        TOKEN = "token", _("Token")
        REST = "rest", _("REST failure")
        BINDING = "binding", _("Widget binding")
        SMS_ACCOUNT = "sms_account", _("SMS provider account")
        MESSAGE = "message", _("Message")

    class Level(models.TextChoices):
        INFO = "info", _("Info")
        WARNING = "warning", _("Warning")
        ERROR = "error", _("Error")

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="journal")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.CharField(max_length=500)
    details = models.JSONField(default=dict, blank=True)
    actor = models.CharField(max_length=100, help_text=_("bitrix24, system, or staff:<username>"))
    staff_user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "journal entries"
        indexes = [models.Index(fields=["portal", "-created_at"], name="journal_portal_created")]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.kind}: {self.message}"


class InstallRun(models.Model):
    """One attempt to bring a portal's bindings in order (install, update, staff re-run)."""

    class Trigger(models.TextChoices):
        FRAME = "frame", _("Install page")
        EVENT = "event", _("ONAPPINSTALL event")
        UPDATE = "update", _("ONAPPUPDATE event")
        STAFF = "staff", _("Staff re-run")

    class Status(models.TextChoices):
        PENDING = "pending", _("Pending")
        RUNNING = "running", _("Running")
        SUCCEEDED = "succeeded", _("Succeeded")
        FAILED = "failed", _("Failed")

    # Public id: the install page polls it; unguessable, so it is also the capability to read/retry it.
    public_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="install_runs")
    trigger = models.CharField(max_length=10, choices=Trigger.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Last dispatch of its task or last step progress: a pending run quiet for longer than
    # B24_INSTALL_REDISPATCH_AFTER_SECONDS lost its task (broker down) and is dispatched again.
    progress_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at"]
        get_latest_by = "created_at"
        indexes = [models.Index(fields=["progress_at"], name="install_run_pending",
                                condition=models.Q(status="pending"))]

    def __str__(self) -> str:
        return f"{self.get_trigger_display()} {self.created_at:%Y-%m-%d %H:%M} ({self.status})"


class InstallStepResult(models.Model):
    Status = InstallRun.Status  # a step moves through the same states as its run

    run = models.ForeignKey(InstallRun, on_delete=models.CASCADE, related_name="steps")
    name = models.CharField(max_length=50)
    title = models.CharField(max_length=100)
    order = models.PositiveIntegerField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    message = models.CharField(max_length=500, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["order", "name"]
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="install_step_unique_per_run")]

    def __str__(self) -> str:
        return f"{self.title}: {self.status}"


class PortalCheck(models.Model):
    """When a periodic check (sender reconcile, binding reconcile, capability check, ...) is next due for a
    portal. Dispatchers select due rows through the (kind, due_at) index with a limit, so a tick costs what
    is due, not what exists; a trigger (an update, an error, a staff action) makes a check due at once."""

    portal = models.ForeignKey(Portal, on_delete=models.CASCADE, related_name="checks")
    kind = models.CharField(max_length=32)
    due_at = models.DateTimeField()
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["portal", "kind"], name="portal_check_unique_kind")]
        indexes = [models.Index(fields=["kind", "due_at"], name="portal_check_due")]

    def __str__(self) -> str:
        return f"{self.kind} due {self.due_at:%Y-%m-%d %H:%M}"
