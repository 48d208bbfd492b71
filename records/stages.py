"""The stage mapping: a portal's lead stages (crm.status.list, ENTITY_ID=STATUS) and the external names
that map to them."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from oauth.client import PortalClient
from tenants.models import Portal

from .models import StageMapping


def fetch_lead_stages(portal: Portal, client: PortalClient | None = None) -> list[dict[str, Any]]:
    client = client or PortalClient(portal)
    rows = client.call("crm.status.list", {"filter": {"ENTITY_ID": "STATUS"}, "order": {"SORT": "ASC"}})
    if isinstance(rows, dict):
        rows = list(rows.values())
    return [row for row in rows or [] if isinstance(row, dict) and row.get("STATUS_ID")]


def do_load_stages(portal: Portal, client: PortalClient | None = None) -> str:
    """Bring the mapping up to date with Bitrix24: a new status gets a row (external name = STATUS_ID, which
    staff may rename); names and order follow Bitrix24; rows of a status that no longer exists go."""
    stages = fetch_lead_stages(portal, client)
    now = timezone.now()
    by_status = {str(row["STATUS_ID"]): row for row in stages}
    added = updated = 0
    with transaction.atomic():
        existing = list(StageMapping.objects.select_for_update().filter(portal=portal))
        taken = {m.external_stage for m in existing}
        mapped = {m.status_id for m in existing}
        for mapping in existing:
            row = by_status.get(mapping.status_id)
            if row is None:
                continue
            mapping.status_name = str(row.get("NAME") or "")[:255]
            mapping.sort = _int(row.get("SORT"))
            mapping.loaded_at = now
            mapping.save(update_fields=["status_name", "sort", "loaded_at"])
            updated += 1
        for status_id, row in by_status.items():
            if status_id in mapped or status_id in taken:
                continue
            StageMapping.objects.create(portal=portal, external_stage=status_id[:50], status_id=status_id[:50],
                                        status_name=str(row.get("NAME") or "")[:255], sort=_int(row.get("SORT")),
                                        loaded_at=now)
            added += 1
        gone = StageMapping.objects.filter(portal=portal).exclude(status_id__in=list(by_status)).delete()[0]
    return f"{len(by_status)} stages: {added} added, {updated} updated, {gone} removed"


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
