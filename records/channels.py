"""Models of the channels besides the HTTP API: AMQP queues bound to portals, and each portal's feed of
offline events (changes made in Bitrix24 that flow back). Imported by `records.models`, so Django sees them
as the records app's models.
"""

from __future__ import annotations

import secrets

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AmqpBinding(models.Model):
    """A RabbitMQ queue whose messages are records of this portal (read by `manage.py consume_records`)."""

    portal = models.ForeignKey("tenants.Portal", on_delete=models.CASCADE, related_name="amqp_bindings")
    queue = models.CharField(max_length=255, unique=True,
                             help_text=_("The queue the external system publishes to (declared durable when "
                                         "missing)"))
    enabled = models.BooleanField(default=True)
    accepted_count = models.PositiveBigIntegerField(default=0, help_text=_("Jobs stored from this queue"))
    rejected_count = models.PositiveBigIntegerField(default=0, help_text=_("Messages sent to the dead-letter "
                                                                           "queue"))
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_rejection = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["queue"]
        verbose_name = _("AMQP binding")

    def __str__(self) -> str:
        return self.queue


def new_process_id() -> str:
    return secrets.token_hex(16)


class OfflineFeed(models.Model):
    """A portal's offline events (ONCRMLEADUPDATE / ONCRMLEADDELETE): whether they are available and bound,
    the channel (`auth_connector`) our own writes carry so they do not come back, and the `process_id` under
    which we claim events (kept, so events claimed by a run that died are claimed again by the next)."""

    class Status(models.TextChoices):
        UNAVAILABLE = "unavailable", _("Unavailable (feature.get rest_offline_extended = N)")
        BOUND = "bound", _("Bound")
        FAILED = "failed", _("Binding failed")

    portal = models.OneToOneField("tenants.Portal", on_delete=models.CASCADE, related_name="offline_feed")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.UNAVAILABLE)
    auth_connector = models.CharField(max_length=50, blank=True,
                                      help_text=_("Empty when the portal lacks rest_auth_connector: our own "
                                                  "writes are then told apart by comparing with what we wrote"))
    process_id = models.CharField(max_length=64, default=new_process_id)
    detail = models.CharField(max_length=500, blank=True)
    checked_at = models.DateTimeField(null=True, blank=True)
    last_polled_at = models.DateTimeField(null=True, blank=True)
    events_processed = models.PositiveBigIntegerField(default=0)
    changes_sent = models.PositiveBigIntegerField(default=0, help_text=_("card_changed / card_deleted replies"))
    events_failed = models.PositiveBigIntegerField(default=0, help_text=_("Marked with event.offline.error"))
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        verbose_name = _("offline event feed")

    def __str__(self) -> str:
        return f"offline events of portal {self.portal_id}: {self.status}"


def own_write_params(portal_id: int) -> dict[str, str]:
    """What our crm.lead.add/update calls carry so Bitrix24 does not record them as this portal's offline
    events (`auth_connector`, when the feed is bound with one)."""
    connector = OfflineFeed.objects.filter(portal_id=portal_id, status=OfflineFeed.Status.BOUND).values_list(
        "auth_connector", flat=True).first()
    return {"auth_connector": connector} if connector else {}
