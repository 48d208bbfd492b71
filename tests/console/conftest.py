from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from messageservice.models import Message, ProviderAccount
from tenants.models import Portal


@pytest.fixture
def staff_client(client: Any) -> Any:
    user = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


def make_account(portal: Portal, *, carrier: str = "sandbox", code: str = "sms", **fields: Any) -> ProviderAccount:
    return ProviderAccount.objects.create(portal=portal, carrier=carrier, code=code, name="SMS", **fields)


def make_messages(account: ProviderAccount, n: int, *, state: str = Message.State.HANDED_TO_CARRIER,
                  status: str | None = "delivered", age: timedelta = timedelta(hours=1),
                  last_error: str = "") -> list[Message]:
    created = timezone.now() - age
    return Message.objects.bulk_create(
        Message(portal_id=account.portal_id, account=account, carrier=account.carrier,
                message_id=secrets.token_hex(16), origin=Message.Origin.CRM, recipient_raw="+79990000000",
                recipient="+79990000000", body="hi", state=state, status=status, last_error=last_error,
                created_at=created)
        for _ in range(n))
