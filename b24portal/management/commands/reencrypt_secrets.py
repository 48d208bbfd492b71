"""Re-encrypt every encrypted column with the first FIELD_ENCRYPTION_KEY (after adding a new key in front).

Rows are locked while they are rewritten, so a token refreshed at the same moment is never overwritten
with its older value. Safe to run repeatedly and while the service runs.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import models, transaction

from b24portal.crypto import ENCRYPTED_FIELD_TYPES

BATCH = 500


def encrypted_models() -> list[tuple[type[models.Model], list[str]]]:
    found = []
    for model in apps.get_models():
        names = [f.name for f in model._meta.concrete_fields if isinstance(f, ENCRYPTED_FIELD_TYPES)]
        if names:
            found.append((model, names))
    return found


class Command(BaseCommand):
    help = "Re-encrypt all secrets (tokens, carrier credentials) with the first FIELD_ENCRYPTION_KEY."

    def handle(self, *args: Any, **options: Any) -> None:
        total = 0
        for model, fields in encrypted_models():
            label = model._meta.label
            pks = list(model._default_manager.order_by("pk").values_list("pk", flat=True))
            for start in range(0, len(pks), BATCH):
                chunk = pks[start : start + BATCH]
                with transaction.atomic():
                    for obj in model._default_manager.select_for_update().filter(pk__in=chunk).only("pk", *fields):
                        # Reading decrypts with any key; saving encrypts with the first.
                        obj.save(update_fields=fields)
                        total += 1
            self.stdout.write(f"{label}: {len(pks)} row(s) re-encrypted ({', '.join(fields)})")
        self.stdout.write(self.style.SUCCESS(f"done: {total} row(s)"))
