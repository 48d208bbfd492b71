"""Portals connected by an incoming webhook: added by staff in admin after the URL is proven (profile,
scope), the secret encrypted and masked, and nothing that needs an installed app ever reaches them."""

from __future__ import annotations

import socket

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import connection

from b24portal.intake import Rejected
from installs.actions import do_start_install_run
from installs.intake import AppEvent
from installs.lifecycle import handle_event
from installs.tasks import verify_portal
from installs.webhooks import AppContextRequired
from messageservice.accounts import clean_account_data
from messageservice.models import Message
from oauth.models import PortalCapabilities, WebhookCredential
from tenants import schedule
from tenants.journal import Actor
from tenants.models import InstallRun, JournalEntry, Portal, PortalCheck, webhook_member_id
from tests.conftest import post_event
from tests.factories import PortalFactory
from tests.fakes.b24_messageservice import send_from_bitrix24
from tests.webhook_portals import connect_webhook_portal

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/tenants/portal/add-webhook/"


@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


def nothing_stored() -> bool:
    return not Portal.objects.exists() and not WebhookCredential.objects.exists()


def test_staff_add_a_portal_by_its_webhook_url_once_profile_and_scope_answer(staff_client, fake_portal):
    fake_portal.add_user(5, name="Ivan", last_name="Petrov", is_admin=True)
    url = fake_portal.add_webhook(5, ["crm", "user"])
    response = staff_client.post(ADD_URL, {"url": url})
    portal = Portal.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/admin/tenants/portal/{portal.pk}/change/"
    assert portal.connection == Portal.Connection.WEBHOOK and portal.status == Portal.Status.ACTIVE
    assert portal.member_id == webhook_member_id(fake_portal.domain) == f"webhook:{fake_portal.domain}"
    assert portal.rest_endpoint == fake_portal.client_endpoint and portal.installed_by_user_id == 5
    hook = WebhookCredential.objects.get(portal=portal)
    assert (hook.user_id, hook.scopes, hook.is_admin, hook.user_name) == (5, ["crm", "user"], True, "Ivan Petrov")
    # proven in ONE request through the webhook: profile + scope in a batch
    assert fake_portal.count("batch") == 1
    assert fake_portal.count("profile", in_batch=True) == 1 and fake_portal.count("scope", in_batch=True) == 1
    assert JournalEntry.objects.filter(portal=portal, kind="staff", message__contains="incoming webhook").exists()
    assert [c.kind for c in PortalCheck.objects.filter(portal=portal)] == ["capabilities"]


def test_a_wrong_secret_is_a_form_error_and_stores_nothing(staff_client, fake_portal):
    url = fake_portal.add_webhook(1, ["crm"])
    response = staff_client.post(ADD_URL, {"url": url.replace("/rest/1/", "/rest/1/0")})
    page = response.content.decode()
    assert response.status_code == 200 and "Bitrix24 refused the webhook (INVALID_CREDENTIALS" in page
    assert nothing_stored()


def test_a_deleted_webhook_is_a_form_error_and_stores_nothing(staff_client, fake_portal):
    url = fake_portal.add_webhook(1, ["crm"])
    fake_portal.delete_webhook(url)
    assert "Bitrix24 refused the webhook" in staff_client.post(ADD_URL, {"url": url}).content.decode()
    assert nothing_stored()


def test_a_domain_off_the_allow_list_is_refused_without_a_request(staff_client, fake_portal):
    before = len(fake_portal.requests)
    page = staff_client.post(ADD_URL, {"url": "https://crm.evil.example/rest/1/abcdef123/"}).content.decode()
    assert "crm.evil.example is not an allowed portal domain" in page
    assert nothing_stored() and len(fake_portal.requests) == before


@pytest.mark.parametrize("url", [
    "not a url",
    "https://acme.bitrix24.com/rest/",
    "https://acme.bitrix24.com/rest/abc/secret123/",
    "https://acme.bitrix24.com/rest/1/",
    "https://acme.bitrix24.com/rest/1/secret123/crm.lead.add.json",
    "https://acme.bitrix24.com/rest/1/secret123/?auth=x",
    "https://user@acme.bitrix24.com/rest/1/secret123/",
    "ftp://acme.bitrix24.com/rest/1/secret123/",
])
def test_a_malformed_url_is_a_form_error_and_stores_nothing(staff_client, url):
    page = staff_client.post(ADD_URL, {"url": url}).content.decode()
    assert "not an incoming-webhook URL; expected https://&lt;portal&gt;/rest/&lt;user id&gt;/&lt;secret&gt;/" in page
    assert nothing_stored()


def test_an_http_url_is_refused_unless_allowed_for_development(staff_client, fake_portal, settings):
    settings.B24_WEBHOOK_ALLOW_HTTP = False
    url = fake_portal.add_webhook(1, ["crm"])  # the fake serves http://127.0.0.1:<port>
    before = len(fake_portal.requests)
    assert "the webhook URL must use https" in staff_client.post(ADD_URL, {"url": url}).content.decode()
    assert nothing_stored() and len(fake_portal.requests) == before


def test_an_unreachable_portal_is_a_form_error_and_stores_nothing(staff_client):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    page = staff_client.post(ADD_URL, {"url": f"http://127.0.0.1:{port}/rest/1/abcdef123/"}).content.decode()
    assert "the portal could not be reached" in page
    assert nothing_stored()


def test_a_domain_installed_as_an_app_cannot_also_be_added_by_webhook(staff_client, fake_portal):
    PortalFactory(domain=fake_portal.domain, rest_endpoint=fake_portal.client_endpoint)
    url = fake_portal.add_webhook(1, ["crm"])
    page = staff_client.post(ADD_URL, {"url": url}).content.decode()
    assert f"{fake_portal.domain} is already connected as an installed app" in page
    assert not WebhookCredential.objects.exists() and Portal.objects.count() == 1
    assert fake_portal.count("batch") == 0


def test_the_secret_is_encrypted_in_the_database(fake_portal):
    portal, url = connect_webhook_portal(fake_portal)
    secret = url.rstrip("/").rsplit("/", 1)[-1]
    with connection.cursor() as cursor:
        cursor.execute("SELECT secret FROM oauth_webhookcredential WHERE portal_id = %s", [portal.pk])
        (stored,) = cursor.fetchone()
    assert stored.startswith("fernet:") and secret not in stored
    assert WebhookCredential.objects.get(portal=portal).secret == secret


def test_admin_masks_the_secret_and_the_form_never_shows_it_back(staff_client, fake_portal):
    portal, url = connect_webhook_portal(fake_portal)
    secret = url.rstrip("/").rsplit("/", 1)[-1]
    page = staff_client.get(f"/admin/tenants/portal/{portal.pk}/change/").content.decode()
    assert secret not in page and f"••••••••{secret[-4:]}" in page
    assert "Incoming webhook" in page and "crm, user" in page
    wrong = secret[:-1] + ("1" if secret.endswith("0") else "0")  # a random secret may itself end in "0"
    refused = staff_client.post(ADD_URL, {"url": url.replace(secret, wrong)}).content.decode()
    assert "refused the webhook" in refused and secret[:-1] not in refused


def test_adding_a_new_url_replaces_the_webhook_and_reactivates_a_refused_portal(staff_client, fake_portal):
    portal, old_url = connect_webhook_portal(fake_portal)
    Portal.objects.filter(pk=portal.pk).update(status=Portal.Status.NEEDS_REINSTALL)
    fake_portal.delete_webhook(old_url)
    new_url = fake_portal.add_webhook(1, ["crm"])
    assert staff_client.post(ADD_URL, {"url": new_url}).status_code == 302
    portal.refresh_from_db()
    hook = WebhookCredential.objects.get(portal=portal)
    assert Portal.objects.count() == 1 and portal.status == Portal.Status.ACTIVE
    assert hook.secret == new_url.rstrip("/").rsplit("/", 1)[-1] and hook.scopes == ["crm"]
    assert JournalEntry.objects.filter(portal=portal, message__startswith="incoming webhook replaced").exists()


def test_the_portal_list_shows_and_filters_the_connection(staff_client, fake_portal):
    connect_webhook_portal(fake_portal)
    PortalFactory(domain="app.bitrix24.com")
    everything = staff_client.get("/admin/tenants/portal/").content.decode()
    assert "Incoming webhook" in everything and "Installed app" in everything
    assert "Add portal by incoming webhook" in everything
    webhooks = staff_client.get("/admin/tenants/portal/?connection__exact=webhook").content.decode()
    assert fake_portal.domain in webhooks and "app.bitrix24.com" not in webhooks


@pytest.mark.parametrize("action", ["verify_now", "rerun_install_steps"])
def test_app_only_admin_actions_skip_webhook_portals_and_say_so(staff_client, fake_portal, action):
    portal, _ = connect_webhook_portal(fake_portal)
    before = len(fake_portal.requests)
    response = staff_client.post("/admin/tenants/portal/", {"action": action, "_selected_action": [portal.pk]},
                                 follow=True)
    assert "1 webhook-connected portal(s) skipped" in response.content.decode()
    assert not InstallRun.objects.filter(portal=portal).exists() and len(fake_portal.requests) == before


def test_install_steps_are_refused_for_a_webhook_portal(fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    with pytest.raises(AppContextRequired, match="install steps needs the installed app"):
        do_start_install_run(portal, trigger=InstallRun.Trigger.STAFF, actor=Actor.SYSTEM)
    assert not InstallRun.objects.filter(portal=portal).exists()


def test_an_sms_provider_cannot_be_set_up_for_a_webhook_portal(fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    with pytest.raises(ValidationError) as refused:
        clean_account_data(portal, {"carrier": "sandbox", "code": "sms", "name": "SMS"})
    assert "needs the installed app" in refused.value.message_dict["portal"][0]


def test_app_only_periodic_checks_never_claim_a_webhook_portal(fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    assert set(schedule.kinds_for(portal)) == {"capabilities"}
    schedule.mark_due(portal, *schedule.registered_kinds())  # e.g. "run periodic checks now"
    assert set(PortalCheck.objects.filter(portal=portal).values_list("kind", flat=True)) == {"capabilities"}
    # a row left by anything else is moved on, never claimed, for a check that needs the app
    PortalCheck.objects.create(portal=portal, kind="senders", due_at=portal.created_at)
    assert portal.pk not in schedule.claim_due("senders", interval=schedule.interval_of("senders"), limit=100)
    assert portal.pk in schedule.claim_due("capabilities", interval=schedule.interval_of("capabilities"), limit=100,
                                           now=portal.created_at + schedule.interval_of("capabilities") * 2)


def test_an_app_event_naming_a_webhook_portal_is_refused_and_changes_nothing(client, fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    payload = fake_portal.onappuninstall(apply=False)
    payload["auth[member_id]"] = portal.member_id
    response = post_event(client, payload)
    assert 400 <= response.status_code < 500
    portal.refresh_from_db()
    assert portal.status == Portal.Status.ACTIVE


def test_the_install_flow_never_matches_a_webhook_portal_by_member_id(fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    event = AppEvent(name="ONAPPUNINSTALL", data={"CLEAN": "1"}, member_id=portal.member_id,
                     domain=portal.domain, rest_endpoint=portal.rest_endpoint, application_token="x", grant=None)
    with pytest.raises(Rejected, match="unknown portal"):
        handle_event(event)
    portal.refresh_from_db()
    assert portal.status == Portal.Status.ACTIVE


def test_the_sms_handler_never_matches_a_webhook_portal(client, fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    payload = send_from_bitrix24(fake_portal, "sms", "+79001234567", "hi", with_auth=False, check_registered=False)
    response = client.post(f"/b24/messageservice/{portal.handler_key}/", payload)
    assert response.status_code == 404 and not Message.objects.exists()


def test_verify_now_does_not_call_app_info_for_a_webhook_portal(fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    assert verify_portal.delay(portal.pk).get().startswith("skipped")
    assert fake_portal.count("app.info") == 0


def test_a_new_webhook_portal_has_its_capabilities_checked_once_stored(staff_client, fake_portal,
                                                                       django_capture_on_commit_callbacks):
    url = fake_portal.add_webhook(1, ["crm"])
    with django_capture_on_commit_callbacks(execute=True):
        assert staff_client.post(ADD_URL, {"url": url}).status_code == 302
    caps = PortalCapabilities.objects.get(portal__connection=Portal.Connection.WEBHOOK)
    assert caps.ok and caps.scopes == ["crm"] and caps.checked_at is not None


def test_re_adding_a_renamed_webhook_portal_updates_it_instead_of_adding_another(staff_client, fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    fake_portal.move_domain()
    Portal.objects.filter(pk=portal.pk).update(domain=fake_portal.domain, rest_endpoint=fake_portal.client_endpoint)
    new_url = fake_portal.add_webhook(1, ["crm"])
    assert staff_client.post(ADD_URL, {"url": new_url}).status_code == 302
    assert list(Portal.objects.values_list("pk", "member_id")) == [(portal.pk, portal.member_id)]


def test_a_refused_webhook_portal_says_it_needs_a_new_url_in_the_list(staff_client, fake_portal):
    portal, _ = connect_webhook_portal(fake_portal)
    Portal.objects.filter(pk=portal.pk).update(status=Portal.Status.NEEDS_REINSTALL)
    assert "Needs a new webhook URL" in staff_client.get("/admin/tenants/portal/").content.decode()


def test_the_add_form_is_for_staff_who_may_change_portals(client, staff_client, fake_portal):
    assert 'name="url"' in staff_client.get(ADD_URL).content.decode()
    helpdesk = get_user_model().objects.create_user("helpdesk", "h@example.com", "pw", is_staff=True)
    client.force_login(helpdesk)  # staff, but without the permission to change portals
    url = fake_portal.add_webhook(1, ["crm"])
    assert client.post(ADD_URL, {"url": url}).status_code == 403
    assert nothing_stored() and fake_portal.count("batch") == 0
