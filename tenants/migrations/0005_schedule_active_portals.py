"""Give every active portal its periodic checks, spread over a day (the same offset rule as
tenants.schedule.spread_offset, written out here so the migration never changes with the code)."""

import hashlib
from datetime import timedelta

from django.db import migrations
from django.utils import timezone

KINDS = ("senders", "bindings", "capabilities")
DAY = 86400


def schedule(apps, schema_editor):
    Portal = apps.get_model("tenants", "Portal")
    PortalCheck = apps.get_model("tenants", "PortalCheck")
    now = timezone.now()
    rows = []
    for portal_id in Portal.objects.filter(status="active").values_list("pk", flat=True).iterator():
        for kind in KINDS:
            digest = hashlib.sha256(f"{kind}:{portal_id}".encode()).digest()
            offset = int(DAY * (int.from_bytes(digest[:8], "big") / 2**64))
            rows.append(PortalCheck(portal_id=portal_id, kind=kind, due_at=now + timedelta(seconds=offset)))
    PortalCheck.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)


class Migration(migrations.Migration):
    dependencies = [("tenants", "0004_portal_check")]
    operations = [migrations.RunPython(schedule, migrations.RunPython.noop)]
