"""Connecting a fake portal by its incoming webhook through the real proof and action (for tests)."""

from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth import get_user_model

from installs.webhooks import do_connect_webhook_portal
from oauth.webhooks import parse_webhook_url, prove_webhook
from tenants.models import Portal
from tests.fakes.bitrix24 import FakePortal


def connect_webhook_portal(fake: FakePortal, *, user_id: int = 1, scopes: Iterable[str] = ("crm", "user"),
                           is_admin: bool | None = None) -> tuple[Portal, str]:
    """A webhook on `fake`, proven and stored as staff would: (the Portal, the webhook URL)."""
    url = fake.add_webhook(user_id, scopes, is_admin=is_admin)
    address = parse_webhook_url(url)
    staff, _ = get_user_model().objects.get_or_create(username="webhook-staff", defaults={"is_staff": True})
    portal = do_connect_webhook_portal(address, prove_webhook(address), staff_user=staff)
    return portal, url
