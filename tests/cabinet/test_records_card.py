"""The records API card of the cabinet's administrators' page: the portal's API keys (create, shown once;
revoke) and its sync jobs, for proven administrators only, each lookup scoped to the visitor's portal."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from records.keys import do_create_api_key
from records.models import ApiKey, Record, SyncJob
from tenants.models import JournalEntry

from .conftest import framed_post, signed_in

pytestmark = pytest.mark.django_db


def make_jobs(portal: Any, n: int, *, state: str = SyncJob.State.SUCCEEDED, prefix: str = "ext") -> list[SyncJob]:
    jobs = []
    for i in range(n):
        record = Record.objects.create(portal=portal, external_id=f"{prefix}-{i}-{state}", lead_id=100 + i)
        jobs.append(SyncJob.objects.create(portal=portal, record=record, action=SyncJob.Action.CREATE, state=state,
                                           attempts=1, lead_id=100 + i, deadline=timezone.now() + timedelta(hours=1),
                                           last_error="boom" if state == SyncJob.State.FAILED else ""))
    return jobs


def api_status(raw_key: str) -> int:
    """What the records API answers the key: 400 (in, but the body is empty) or 401 (not a valid key)."""
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return client.post("/api/v1/records/", {}, format="json").status_code


def created_key(body: str) -> str:
    found = re.search(r'id="new-key">([^<]+)<', body)
    assert found is not None, body
    return found.group(1)


def test_a_member_gets_a_403_and_no_records_card(client, member):
    do_create_api_key(member.portal, name="billing")
    browser = signed_in(member.portal, member.user_id)

    portal_page = browser.get("/cabinet/portal/")
    assert portal_page.status_code == 403 and browser.get("/cabinet/portal/sync-jobs/").status_code == 403
    assert 'id="api-keys-and-sync-jobs"' not in portal_page.content.decode()
    refused = browser.post("/cabinet/portal/api-keys/", {"action": "create", "name": "mine"})
    framed = framed_post(client, "/cabinet/portal/api-keys/", member.token, action="create", name="mine")
    page = browser.get("/cabinet/").content.decode()

    assert refused.status_code == 403 and framed.status_code == 403
    assert ApiKey.objects.filter(portal=member.portal).count() == 1
    assert 'id="api-keys"' not in page and "billing" not in page and "billing" not in portal_page.content.decode()


def test_the_portal_page_shows_the_portals_keys_without_their_secrets(owner):
    api_key, raw_key = do_create_api_key(owner.portal, name="billing", callback_url="https://crm.example/hook")

    body = signed_in(owner.portal, owner.user_id, is_admin=True).get("/cabinet/portal/").content.decode()

    assert 'id="api-keys-and-sync-jobs"' in body and f'<tr data-id="{api_key.pk}"><td>billing</td>' in body
    assert f"{api_key.prefix}…" in body and "https://crm.example/hook" in body
    assert raw_key not in body and api_key.key_hash not in body and api_key.callback_secret not in body


def test_an_administrator_creates_a_key_sees_it_once_and_it_opens_the_records_api(owner):
    browser = signed_in(owner.portal, owner.user_id, is_admin=True)

    answer = browser.post("/cabinet/portal/api-keys/", {"action": "create", "name": "  shop  "})
    raw_key = created_key(answer.content.decode())
    api_key = ApiKey.objects.get(portal=owner.portal)
    later = browser.get("/cabinet/portal/").content.decode()

    assert answer.status_code == 200 and answer["Cache-Control"] == "no-store"
    assert api_key.name == "shop" and raw_key.startswith(api_key.prefix) and api_key.callback_url == ""
    assert raw_key not in later and f"{api_key.prefix}…" in later
    assert api_status(raw_key) == 400
    assert JournalEntry.objects.filter(portal=owner.portal, actor="user:1", message__contains="shop").exists()


def test_an_administrator_in_a_frame_creates_and_revokes_a_key(client, owner):
    answer = framed_post(client, "/cabinet/portal/api-keys/", owner.token, action="create", name="frame key")
    raw_key = created_key(answer.content.decode())
    api_key = ApiKey.objects.get(portal=owner.portal)

    revoked = framed_post(client, "/cabinet/portal/api-keys/", owner.token, action="revoke", key=api_key.pk)

    api_key.refresh_from_db()
    assert answer.status_code == 200 and answer["Content-Security-Policy"] == f"frame-ancestors {owner.portal.origin}"
    assert revoked.status_code == 200 and 'id="note"' in revoked.content.decode()
    assert api_key.revoked_at is not None and api_status(raw_key) == 401


def test_a_revoked_key_gets_a_401_from_the_records_api(owner):
    api_key, raw_key = do_create_api_key(owner.portal, name="billing")
    assert api_status(raw_key) == 400

    done = signed_in(owner.portal, owner.user_id, is_admin=True).post(
        "/cabinet/portal/api-keys/", {"action": "revoke", "key": api_key.pk})

    api_key.refresh_from_db()
    assert done.status_code == 302 and api_key.revoked_at is not None
    assert api_status(raw_key) == 401


def test_another_portals_key_is_not_found_and_stays_active(client, owner, outsider):
    api_key, raw_key = do_create_api_key(owner.portal, name="billing")

    signed = signed_in(outsider.portal, outsider.user_id, is_admin=True).post(
        "/cabinet/portal/api-keys/", {"action": "revoke", "key": api_key.pk})
    framed = framed_post(client, "/cabinet/portal/api-keys/", outsider.token, action="revoke", key=api_key.pk)
    page = signed_in(outsider.portal, outsider.user_id, is_admin=True).get("/cabinet/portal/").content.decode()

    api_key.refresh_from_db()
    assert signed.status_code == 404 and framed.status_code == 404
    assert api_key.revoked_at is None and api_status(raw_key) == 400 and "billing" not in page


def test_malformed_key_requests_are_a_4xx_and_change_nothing(owner):
    browser = signed_in(owner.portal, owner.user_id, is_admin=True)

    assert browser.post("/cabinet/portal/api-keys/", {"action": "create", "name": " "}).status_code == 400
    assert browser.post("/cabinet/portal/api-keys/", {"action": "create", "name": "x" * 101}).status_code == 400
    assert browser.post("/cabinet/portal/api-keys/", {"action": "revoke", "key": "9" * 40}).status_code == 404
    assert browser.post("/cabinet/portal/api-keys/", {"action": "revoke", "key": "-1"}).status_code == 404
    assert browser.post("/cabinet/portal/api-keys/", {"action": "rename"}).status_code == 400
    assert browser.get("/cabinet/portal/api-keys/").status_code == 400
    assert not ApiKey.objects.filter(portal=owner.portal).exists()


def test_creating_a_key_signed_in_needs_the_csrf_token(owner):
    browser = signed_in(owner.portal, owner.user_id, is_admin=True, enforce_csrf=True)

    refused = browser.post("/cabinet/portal/api-keys/", {"action": "create", "name": "shop"})
    token = browser.get("/cabinet/portal/").cookies["csrftoken"].value
    accepted = browser.post("/cabinet/portal/api-keys/", {"action": "create", "name": "shop",
                                                          "csrfmiddlewaretoken": token})

    assert refused.status_code == 403 and accepted.status_code == 200
    assert ApiKey.objects.filter(portal=owner.portal).count() == 1


def test_the_jobs_page_lists_only_this_portals_jobs_with_a_count_per_state(owner, outsider):
    mine = make_jobs(owner.portal, 2) + make_jobs(owner.portal, 1, state=SyncJob.State.FAILED)
    theirs = make_jobs(outsider.portal, 3, prefix="theirs")
    browser = signed_in(owner.portal, owner.user_id, is_admin=True)

    body = browser.get("/cabinet/portal/sync-jobs/").content.decode()
    failed = browser.get("/cabinet/portal/sync-jobs/?state=failed").content.decode()
    card = browser.get("/cabinet/portal/").content.decode()

    assert all(f'<tr data-id="{job.pk}">' in body for job in mine)
    assert not any(f'<tr data-id="{job.pk}">' in body or f'<tr data-id="{job.pk}">' in card for job in theirs)
    assert "Succeeded: 2" in card and "Failed: 1" in card and "Pending: 0" in card
    assert failed.count("<tr data-id=") == 1 and "boom" in failed and "<strong>Failed: 1</strong>" in failed


def test_the_jobs_page_pages_by_fifty_in_a_frame_too(client, owner):
    jobs = make_jobs(owner.portal, 51)

    first = framed_post(client, "/cabinet/portal/sync-jobs/", owner.token).content.decode()
    second = framed_post(client, "/cabinet/portal/sync-jobs/?page=2", owner.token).content.decode()

    assert first.count('<tr data-id="') == 50 and f'<tr data-id="{jobs[0].pk}">' not in first
    assert second.count('<tr data-id="') == 1 and f'<tr data-id="{jobs[0].pk}">' in second
    assert 'action="/cabinet/portal/sync-jobs/?page=2"' in first  # the pager POSTs the frame token on


def test_the_jobs_page_and_the_card_cost_the_same_queries_for_one_or_many_jobs_and_keys(owner):
    browser = signed_in(owner.portal, owner.user_id, is_admin=True)
    make_jobs(owner.portal, 1)
    do_create_api_key(owner.portal, name="first")
    browser.get("/cabinet/portal/sync-jobs/")
    with CaptureQueriesContext(connection) as one_page:
        browser.get("/cabinet/portal/sync-jobs/")
    with CaptureQueriesContext(connection) as one_card:
        browser.get("/cabinet/portal/")
    make_jobs(owner.portal, 30, prefix="more")
    for i in range(5):
        do_create_api_key(owner.portal, name=f"key {i}")
    with CaptureQueriesContext(connection) as many_page:
        browser.get("/cabinet/portal/sync-jobs/")
    with CaptureQueriesContext(connection) as many_card:
        body = browser.get("/cabinet/portal/").content.decode()

    assert body.count('<tr data-id="') >= 6 + 10  # keys and the card's ten newest jobs
    assert len(many_page.captured_queries) == len(one_page.captured_queries)
    assert len(many_card.captured_queries) == len(one_card.captured_queries)
