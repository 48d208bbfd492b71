"""SMS templates: a user's own (owner_user_id set) and the portal's shared ones (owner_user_id empty)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class SmsTemplate(models.Model):
    """A reusable SMS text with placeholders ({first_name}, {company}, ... see cabinet/placeholders.py) filled
    from the CRM item it is sent to. Personal ones are seen and edited by their owner only; portal-wide ones
    are seen by every user of the portal and edited by its administrators (user.admin, proven)."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="sms_templates")
    owner_user_id = models.PositiveIntegerField(
        null=True, blank=True, help_text=_("The Bitrix24 user it belongs to; empty: shared by the whole portal"))
    name = models.CharField(max_length=100)
    body = models.TextField()
    created_by_user_id = models.PositiveIntegerField()
    updated_by_user_id = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["portal_id", "name", "id"]
        constraints = [
            models.UniqueConstraint(fields=["portal", "owner_user_id", "name"], name="sms_template_name_per_owner",
                                    condition=Q(owner_user_id__isnull=False)),
            models.UniqueConstraint(fields=["portal", "name"], name="sms_template_name_portal_wide",
                                    condition=Q(owner_user_id__isnull=True)),
        ]
        indexes = [models.Index(fields=["portal", "owner_user_id", "name"], name="sms_template_visible")]

    def __str__(self) -> str:
        return self.name

    @property
    def is_portal_wide(self) -> bool:
        return self.owner_user_id is None
