"""What we registered in each portal (widgets, the custom field type, the fields made from it) and its state."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Binding(models.Model):
    """One thing we registered in a portal, as last verified against the portal itself.

    `code` is the placement code (CRM_DEAL_LIST_MENU), the short userfield type code (sms_consent), or, for a
    CRM field made from our type, "<ENTITY>:<FIELD_NAME>" (CONTACT:UF_CRM_SMS_CONSENT)."""

    class Kind(models.TextChoices):
        PLACEMENT = "placement", _("Widget (placement)")
        USERFIELD_TYPE = "userfield_type", _("Custom field type")
        USERFIELD = "userfield", _("CRM field")

    class State(models.TextChoices):
        PENDING = "pending", _("Not checked yet")
        BOUND = "bound", _("Bound")
        MISSING = "missing", _("Missing")
        ERROR = "error", _("Error")
        UNBOUND = "unbound", _("Unbound by staff")

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="bindings")
    kind = models.CharField(max_length=20, choices=Kind.choices)
    code = models.CharField(max_length=120)
    handler = models.URLField(max_length=300, blank=True)
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING, db_index=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_bound_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    repairs = models.PositiveIntegerField(default=0, help_text=_("How often the reconcile had to re-create it"))
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["portal_id", "kind", "code"]
        constraints = [models.UniqueConstraint(fields=["portal", "kind", "code"], name="binding_unique_per_portal")]
        indexes = [models.Index(fields=["state", "last_checked_at"], name="binding_state_checked")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.code} ({self.state})"


class TimelineComment(models.Model):
    """Outbox: the CRM timeline comment a widget send owes the item, written in the same transaction as the
    message. `tasks.send_timeline_comment` posts it and marks it done; `tasks.redispatch_timeline_comments`
    dispatches rows whose task was lost (broker down at commit). Staff see failed rows in admin."""

    class State(models.TextChoices):
        PENDING = "pending", _("Waiting to be sent")
        SENDING = "sending", _("Sending")
        DONE = "done", _("Added to the timeline")
        FAILED = "failed", _("Failed")

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="timeline_comments")
    message = models.OneToOneField("messageservice.Message", on_delete=models.CASCADE,
                                   related_name="timeline_comment")
    user_id = models.PositiveIntegerField(help_text=_("The Bitrix24 user who sent the SMS (their token posts it)"))
    entity = models.CharField(max_length=20)
    item_id = models.PositiveIntegerField()
    comment = models.TextField()
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    claimed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    done_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The sweeper: rows still owed (pending or stuck sending) by due time; done rows stay out of it.
            models.Index(fields=["next_attempt_at"], name="timeline_comment_due",
                         condition=models.Q(state__in=["pending", "sending"])),
            models.Index(fields=["portal", "state"], name="timeline_comment_portal"),
        ]

    def __str__(self) -> str:
        return f"{self.entity} {self.item_id} ({self.state})"
