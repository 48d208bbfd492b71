"""The support-staff admin: lists without N+1 queries, search, filters, actions, no secrets shown."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from installs.steps import APP_EVENTS
from tenants.models import InstallRun, Portal
from tests.factories import JournalEntryFactory, PortalFactory, PortalTokenFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


def changelist_queries(staff_client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert staff_client.get(url).status_code == 200
    return len(ctx.captured_queries)


def test_the_portal_list_makes_the_same_number_of_queries_for_5_or_50_portals(staff_client):
    PortalFactory.create_batch(5)
    few = changelist_queries(staff_client, "/admin/tenants/portal/")
    PortalFactory.create_batch(45)
    many = changelist_queries(staff_client, "/admin/tenants/portal/")
    assert many == few


def test_the_journal_list_makes_the_same_number_of_queries_for_5_or_50_entries(staff_client):
    JournalEntryFactory.create_batch(5)
    few = changelist_queries(staff_client, "/admin/tenants/journalentry/")
    JournalEntryFactory.create_batch(45)
    many = changelist_queries(staff_client, "/admin/tenants/journalentry/")
    assert many == few


def test_portals_can_be_found_by_domain_and_member_id(staff_client):
    wanted = PortalFactory(domain="acme.bitrix24.com")
    PortalFactory(domain="other.bitrix24.com")
    by_domain = staff_client.get("/admin/tenants/portal/?q=acme").content.decode()
    by_member = staff_client.get(f"/admin/tenants/portal/?q={wanted.member_id}").content.decode()
    assert "acme.bitrix24.com" in by_domain and "other.bitrix24.com" not in by_domain
    assert "acme.bitrix24.com" in by_member and "other.bitrix24.com" not in by_member


def test_portals_can_be_filtered_by_status_and_licence_family(staff_client):
    PortalFactory(domain="blocked.bitrix24.com", status=Portal.Status.BLOCKED, license_family="ent")
    PortalFactory(domain="active.bitrix24.com")
    page = staff_client.get("/admin/tenants/portal/?status__exact=blocked&license_family=ent").content.decode()
    assert "blocked.bitrix24.com" in page and "active.bitrix24.com" not in page


def test_the_portal_page_shows_no_secret(staff_client):
    token = PortalTokenFactory()
    page = staff_client.get(f"/admin/tenants/portal/{token.portal_id}/change/").content.decode()
    token_page = staff_client.get(f"/admin/oauth/portaltoken/{token.pk}/change/").content.decode()
    for secret in (token.access_token, token.refresh_token, token.portal.handler_key):
        assert secret not in page and secret not in token_page
    assert token.access_token[-4:] in token_page  # masked: only the tail


def test_block_and_unblock_actions_change_status_and_journal_the_staff_member(staff_client):
    portal = PortalFactory()
    staff_client.post("/admin/tenants/portal/", {"action": "block", "_selected_action": [portal.pk]})
    portal.refresh_from_db()
    assert portal.status == Portal.Status.BLOCKED
    assert portal.journal.filter(actor="staff:support", message__contains="blocked").exists()

    staff_client.post("/admin/tenants/portal/", {"action": "unblock", "_selected_action": [portal.pk]})
    portal.refresh_from_db()
    assert portal.status == Portal.Status.ACTIVE


def test_rerun_install_steps_runs_them_against_the_portal(staff_client, installed_portal, fake_portal,
                                                          django_capture_on_commit_callbacks):
    fake_portal.event_bindings.clear()
    with django_capture_on_commit_callbacks(execute=True):
        staff_client.post("/admin/tenants/portal/", {"action": "rerun_install_steps",
                                                     "_selected_action": [installed_portal.pk]})
    run = installed_portal.install_runs.filter(trigger=InstallRun.Trigger.STAFF).get()
    assert run.status == InstallRun.Status.SUCCEEDED
    assert len(fake_portal.event_bindings) == len(APP_EVENTS)


def test_verify_now_records_app_info(staff_client, installed_portal, fake_portal):
    fake_portal.license = "en_ent500"
    staff_client.post("/admin/tenants/portal/", {"action": "verify_now", "_selected_action": [installed_portal.pk]})
    installed_portal.refresh_from_db()
    assert installed_portal.license == "en_ent500"
    assert installed_portal.rate_plan == Portal.RatePlan.ENTERPRISE
    assert installed_portal.journal.filter(actor="staff:support", message__startswith="app.info").exists()


def test_the_portal_detail_page_lists_the_journal(staff_client, installed_portal):
    page = staff_client.get(f"/admin/tenants/portal/{installed_portal.pk}/change/").content.decode()
    assert "installed and verified" in page


def test_the_portal_page_links_to_its_journal_bindings_and_sms_lists(staff_client):
    portal = PortalFactory()
    page = staff_client.get(f"/admin/tenants/portal/{portal.pk}/change/").content.decode()
    for changelist in ("tenants/journalentry", "placements/binding", "messageservice/provideraccount",
                       "messageservice/message"):
        url = f"/admin/{changelist}/?portal__id__exact={portal.pk}"
        assert url in page
        response = staff_client.get(url)
        assert response.status_code == 200 and "?e=1" not in response.get("Location", ""), changelist


def test_calls_waiting_for_method_confirmation_are_listed_without_n_plus_1_and_staff_can_give_up(staff_client):
    from oauth.models import ParkedCall

    calls = [ParkedCall.objects.create(portal=PortalFactory(), method="voximplant.user.get",
                                       task_name="tenants.tasks.verify_portal", args=[i], token_hash="0" * 64)
             for i in range(3)]
    url = "/admin/oauth/parkedcall/"
    few = changelist_queries(staff_client, url)
    ParkedCall.objects.create(portal=PortalFactory(), method="app.info", task_name="x", token_hash="1" * 64)
    assert changelist_queries(staff_client, url) == few
    assert "voximplant.user.get" in staff_client.get(url).content.decode()

    staff_client.post(url, {"action": "give_up", "_selected_action": [calls[0].pk]})

    calls[0].refresh_from_db()
    assert calls[0].state == ParkedCall.State.FAILED and calls[0].reason == "given up by staff:support"
    assert calls[0].portal.journal.filter(actor="staff:support", message__contains="given up").exists()
    assert ParkedCall.objects.filter(state=ParkedCall.State.WAITING).count() == 3
