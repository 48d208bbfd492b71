"""The records API for a portal connected by an incoming webhook (no app installed): the same intake, the
same applier, and every CRM call goes through the webhook URL as its user, never with an OAuth token."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from oauth import capabilities
from oauth.capabilities import check_portal
from oauth.client import PortalClient
from records import tasks
from records.keys import do_create_api_key
from records.models import Record, SyncJob
from tests.fakes import b24_crm
from tests.fakes.bitrix24 import FakePortal
from tests.records.conftest import IVAN
from tests.webhook_portals import connect_webhook_portal

pytestmark = pytest.mark.django_db


def test_a_record_posted_for_a_webhook_portal_becomes_a_lead_through_the_webhook(
        fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    portal, _ = connect_webhook_portal(fake_portal, user_id=3, scopes=("crm", "user"))
    _, key = do_create_api_key(portal, name="billing")
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    with django_capture_on_commit_callbacks(execute=False):
        response = client.post("/api/v1/records/", IVAN, format="json")
    assert response.status_code == 202, response.content
    tasks.apply_portal_jobs.apply(args=(portal.pk,))

    assert SyncJob.objects.get(portal=portal).state == SyncJob.State.SUCCEEDED
    (lead,) = [lead for lead in b24_crm.all_leads(fake_portal) if lead.get("ORIGIN_ID") == IVAN["external_id"]]
    assert Record.objects.get(portal=portal).lead_id == int(lead["ID"])
    crm_calls = [r for r in fake_portal.requests if r.method.startswith("crm.lead.")]
    assert crm_calls and all(r.token is None and r.user_id == 3 for r in crm_calls)


def test_the_capability_check_of_a_webhook_portal_covers_the_records_methods(fake_portal: FakePortal):
    portal, _ = connect_webhook_portal(fake_portal, user_id=3, scopes=("user",))  # no crm scope
    assert {"crm.lead.add", "crm.lead.update", "crm.lead.list"} <= set(capabilities.required_methods(webhook=True))
    caps = check_portal(portal, PortalClient(portal))
    assert not caps.ok and "scope crm" in caps.missing
