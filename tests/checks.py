"""Periodic checks (tenants.schedule) as the trigger tests see them: push a portal's check away, ask whether
it is due, read the journal entries its triggers wrote."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from tenants.models import JournalEntry, Portal, PortalCheck


def push_away(portal: Portal, kind: str) -> None:
    """The sweep has this portal's check a day away (as it usually has)."""
    PortalCheck.objects.update_or_create(portal=portal, kind=kind,
                                         defaults={"due_at": timezone.now() + timedelta(days=1)})


def is_due(portal: Portal, kind: str) -> bool:
    return PortalCheck.objects.filter(portal=portal, kind=kind, due_at__lte=timezone.now()).exists()


def trigger_entries(portal: Portal, kind: str) -> list[str]:
    return list(JournalEntry.objects.filter(portal=portal, message__startswith=f"{kind} check due now")
                .values_list("message", flat=True))
