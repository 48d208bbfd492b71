"""What a portal's purge (uninstall with CLEAN=1) removes of the records sync: its records, jobs and replies
(they carry people's names and phones), stage mapping; its API keys are revoked (kept for the audit trail)."""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from .models import ApiKey, Record, Reply, StageMapping, SyncJob


def forget_records_on_purge(sender: Any, portal: Any, **kwargs: Any) -> None:
    with transaction.atomic():
        Reply.objects.filter(portal=portal).delete()
        SyncJob.objects.filter(portal=portal).delete()
        Record.objects.filter(portal=portal).delete()
        StageMapping.objects.filter(portal=portal).delete()
        ApiKey.objects.filter(portal=portal, revoked_at__isnull=True).update(revoked_at=timezone.now())
