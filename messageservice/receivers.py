"""What messageservice does when a portal is purged (uninstall with CLEAN=1, an install never finished)."""

from __future__ import annotations

from typing import Any

from django.db.models import Count
from django.db.models.functions import TruncDate

from tenants.models import Portal

from .models import Message, PhoneConsent, ProviderAccount, PurgedDailyCount


def purge_portal_sms(sender: Any, portal: Portal, **kwargs: Any) -> None:
    """CLEAN=1 means "delete the application's settings and data": the provider accounts (credentials
    included), messages with their CRM links, and consent records go; anonymous daily counts stay.
    Runs inside the purging transaction. Bitrix24 already deleted the portal's senders."""
    messages = Message.objects.filter(portal=portal)
    counts = (messages.annotate(day=TruncDate("created_at")).values("day", "carrier", "status")
              .annotate(n=Count("id")).order_by())
    PurgedDailyCount.objects.bulk_create(
        PurgedDailyCount(portal=portal, day=row["day"], carrier=row["carrier"], status=row["status"] or "",
                         count=row["n"]) for row in counts)
    messages.delete()
    ProviderAccount.objects.filter(portal=portal).delete()
    PhoneConsent.objects.filter(portal=portal).delete()
