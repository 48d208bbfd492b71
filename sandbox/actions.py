"""What the sandbox does on our side when its portal finishes installing: the zero-configuration part.

A real portal's administrator would add an SMS provider account and wait for the daily reconcile to add the
consent fields; the sandbox does both at once, so the tour works without reading anything.
"""

from __future__ import annotations

from django.db import transaction

from b24portal.dispatch import dispatch_on_commit
from messageservice.accounts import accounts_for, do_save_account
from placements.tasks import add_consent_fields
from tenants.journal import Actor
from tenants.models import Portal

SANDBOX_ACCOUNT_CODE = "sandbox_sms"


def do_prepare_sandbox_portal(member_id: str, *, carrier_url: str, api_id: str) -> str:
    """Give the sandbox portal a provider account at the sandbox carrier (once) and its consent fields."""
    portal = Portal.objects.filter(member_id=member_id).first()
    if portal is None:
        return "not installed"
    created = False
    if not accounts_for(portal, active_only=False).filter(code=SANDBOX_ACCOUNT_CODE).exists():
        do_save_account(portal, actor=Actor.SYSTEM, data={
            "carrier": "smsru", "code": SANDBOX_ACCOUNT_CODE, "name": "Sandbox SMS", "sender": "b24portal",
            "base_url": carrier_url, "credentials": {"api_id": api_id}, "options": {}, "is_active": True})
        created = True
    with transaction.atomic():
        dispatch_on_commit(add_consent_fields, portal.pk)
    return "account created" if created else "account exists"
