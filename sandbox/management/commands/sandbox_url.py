"""Print where the sandbox Bitrix24 is (`make run` calls this before starting the processes)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Print the sandbox Bitrix24's URL (development only)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.SANDBOX_ENABLED:
            self.stdout.write("The sandbox Bitrix24 is off (SANDBOX_ENABLED).")
            return
        url = f"{settings.PUBLIC_URL}/sandbox/"
        self.stdout.write(self.style.SUCCESS(f"\n  Sandbox Bitrix24: {url}\n")
                          + "  Install b24portal there, open a contact and send an SMS: no Bitrix24 account needed.\n")
