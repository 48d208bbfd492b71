"""Bindings: install steps bind and verify, the reconcile repairs what Bitrix24 dropped, staff actions,
and the fake methods' validation (bitrix24/b24restdocs api-reference/widgets/placement-*.md and
widgets/user-field/userfieldtype-*.md)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext

from oauth.client import PortalClient
from oauth.errors import B24AccessDenied, B24Error
from placements import actions, tasks
from placements.models import Binding
from tenants import schedule
from tenants.models import InstallRun, JournalEntry, Portal
from tests.conftest import post_event
from tests.factories import PortalFactory
from tests.fakes import b24_placements

pytestmark = pytest.mark.django_db

LIST_MENU = "https://app.b24portal.test/b24/placements/crm-list-menu/"
CONSENT = "https://app.b24portal.test/b24/placements/userfield/consent/"
DEFAULT_CODES = {"CRM_LEAD_LIST_MENU", "CRM_DEAL_LIST_MENU", "CRM_CONTACT_LIST_MENU", "CRM_COMPANY_LIST_MENU"}


def bound_codes(fake_portal) -> set[str]:
    return {row["placement"] for row in b24_placements.placements(fake_portal) if row["handler"] == LIST_MENU}


def test_install_binds_the_widgets_and_the_field_type_and_verifies_them(installed_portal, fake_portal):
    assert installed_portal.status == Portal.Status.ACTIVE
    assert bound_codes(fake_portal) == DEFAULT_CODES
    row = next(r for r in b24_placements.placements(fake_portal) if r["placement"] == "CRM_DEAL_LIST_MENU")
    assert row["title"] == "SMS" and set(row["langAll"]) == {"en", "ru"}
    assert b24_placements.userfield_types(fake_portal) == [
        {"USER_TYPE_ID": "sms_consent", "HANDLER": CONSENT, "TITLE": "SMS consent",
         "DESCRIPTION": "Consent to receive SMS, per phone"}]
    rows = Binding.objects.filter(portal=installed_portal)
    assert {(b.kind, b.code, b.state) for b in rows} == {
        *((Binding.Kind.PLACEMENT, code, Binding.State.BOUND) for code in DEFAULT_CODES),
        (Binding.Kind.PLACEMENT, "REST_APP_URI", Binding.State.BOUND),
        (Binding.Kind.USERFIELD_TYPE, "sms_consent", Binding.State.BOUND)}
    # Verified with placement.get / userfieldtype.list after binding, not trusted from "true".
    assert fake_portal.count("placement.get") >= 2 and fake_portal.count("userfieldtype.list") >= 2


def test_which_widgets_a_portal_gets_is_configuration(settings, client, fake_portal,
                                                      django_capture_on_commit_callbacks):
    from tests.conftest import post_install_frame

    settings.B24_PLACEMENTS = ["CRM_LEAD_LIST_MENU"]
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)

    assert bound_codes(fake_portal) == {"CRM_LEAD_LIST_MENU"}


def test_installing_again_binds_nothing_twice(installed_portal, fake_portal):
    binds = fake_portal.count("placement.bind")
    report = actions.do_reconcile_portal(installed_portal, with_fields=False)

    assert fake_portal.count("placement.bind") == binds
    assert not report.repaired and not report.errors


def test_the_reconcile_repairs_what_an_app_update_dropped(client, installed_portal, fake_portal,
                                                          django_capture_on_commit_callbacks):
    fake_portal.onappupdate()  # Bitrix24 drops handlers on update
    assert bound_codes(fake_portal) == set()

    result = tasks.reconcile_portal_bindings.delay(installed_portal.pk).get()

    assert bound_codes(fake_portal) == DEFAULT_CODES
    assert "bound" in result
    repaired = Binding.objects.get(portal=installed_portal, code="CRM_LEAD_LIST_MENU")
    assert repaired.state == Binding.State.BOUND and repaired.repairs == 1
    entry = JournalEntry.objects.filter(portal=installed_portal, kind=JournalEntry.Kind.BINDING).first()
    assert entry.level == "warning" and "CRM_LEAD_LIST_MENU" in entry.message


def test_the_beat_task_reconciles_every_active_portal_only(installed_portal, fake_portal, settings):
    from b24portal.celery import app  # noqa: F401

    assert "placements-reconcile-bindings" in settings.CELERY_BEAT_SCHEDULE
    deleted = PortalFactory(status=Portal.Status.DELETED)
    schedule.mark_due(installed_portal, "bindings")
    schedule.mark_due(deleted, "bindings")
    assert tasks.reconcile_all_bindings.delay().get() == 1


def test_the_reconcile_adds_the_consent_field_to_contacts_and_leads_once_installed(installed_portal, fake_portal):
    fake_portal.installed = False  # before installFinish Bitrix24 refuses the field
    report = actions.do_reconcile_portal(installed_portal)
    assert "CONTACT:UF_CRM_SMS_CONSENT" in report.errors
    assert Binding.objects.get(code="CONTACT:UF_CRM_SMS_CONSENT").state == Binding.State.ERROR

    fake_portal.finish_install()
    report = actions.do_reconcile_portal(installed_portal)

    assert not report.errors
    for entity in ("contact", "lead"):
        (field,) = b24_placements.userfields(fake_portal, entity)
        assert field["USER_TYPE_ID"] == f"rest_{fake_portal.app_id}_sms_consent"
        assert field["FIELD_NAME"] == "UF_CRM_SMS_CONSENT"
    assert Binding.objects.get(code="LEAD:UF_CRM_SMS_CONSENT").state == Binding.State.BOUND


def test_a_type_code_over_bitrix24s_50_character_limit_is_refused_before_calling(settings, installed_portal,
                                                                                  fake_portal):
    settings.B24_CONSENT_TYPE_CODE = "x" * 45  # rest_17_ + 45 = 53 characters
    adds = fake_portal.count("userfieldtype.add")

    report = actions.do_reconcile_portal(installed_portal, with_fields=False)

    assert fake_portal.count("userfieldtype.add") == adds
    assert "50" in report.errors["x" * 45]
    assert Binding.objects.get(code="x" * 45).state == Binding.State.ERROR


def test_staff_unbind_and_rebind(installed_portal, fake_portal):
    staff = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    binding = Binding.objects.get(portal=installed_portal, code="CRM_DEAL_LIST_MENU")

    assert tasks.unbind_binding.delay(binding.pk, staff.pk).get() == "unbound"
    assert "CRM_DEAL_LIST_MENU" not in bound_codes(fake_portal)
    params = fake_portal.calls("placement.unbind")[-1].params
    assert (params["PLACEMENT"], params["HANDLER"]) == ("CRM_DEAL_LIST_MENU", LIST_MENU)
    # The reconcile respects a staff unbind.
    actions.do_reconcile_portal(installed_portal, with_fields=False)
    assert "CRM_DEAL_LIST_MENU" not in bound_codes(fake_portal)
    assert Binding.objects.get(pk=binding.pk).state == Binding.State.UNBOUND

    tasks.rebind_binding.delay(binding.pk, staff.pk).get()
    assert "CRM_DEAL_LIST_MENU" in bound_codes(fake_portal)
    assert Binding.objects.get(pk=binding.pk).state == Binding.State.BOUND
    messages = list(JournalEntry.objects.filter(portal=installed_portal, kind="binding").values_list("actor",
                                                                                                    flat=True))
    assert "staff:ops" in messages


def test_a_clean_uninstall_forgets_the_bindings(client, installed_portal, fake_portal):
    assert post_event(client, fake_portal.onappuninstall(clean=True)).status_code == 200

    assert not Binding.objects.filter(portal=installed_portal).exists()
    assert b24_placements.placements(fake_portal) == []  # Bitrix24 removed them itself


# -- admin ------------------------------------------------------------------------------------------------
@pytest.fixture
def staff_client(client):
    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw")
    client.force_login(user)
    return client


def test_admin_lists_bindings_without_n_plus_one(staff_client):
    for _ in range(2):
        portal = PortalFactory()
        for code in ("A", "B", "C"):
            Binding.objects.create(portal=portal, kind=Binding.Kind.PLACEMENT, code=code, state="missing")
    with CaptureQueriesContext(connection) as few:
        assert staff_client.get("/admin/placements/binding/").status_code == 200
    for _ in range(3):
        portal = PortalFactory()
        for code in ("A", "B", "C"):
            Binding.objects.create(portal=portal, kind=Binding.Kind.PLACEMENT, code=code, state="bound")
    with CaptureQueriesContext(connection) as many:
        response = staff_client.get("/admin/placements/binding/?problem=yes")
    assert len(many) == len(few)
    assert response.content.decode().count("Missing") >= 6


def test_admin_filters_by_portal_and_links_there(staff_client, installed_portal):
    from placements.admin import portal_bindings_link

    link = portal_bindings_link(installed_portal)
    url = link.split('"')[1].replace("&amp;", "&")
    response = staff_client.get(url)
    assert response.status_code == 200
    assert "CRM_LEAD_LIST_MENU" in response.content.decode()


def test_admin_unbind_action_does_real_work(staff_client, installed_portal, fake_portal):
    binding = Binding.objects.get(portal=installed_portal, code="CRM_LEAD_LIST_MENU")
    response = staff_client.post("/admin/placements/binding/", {"action": "unbind", "_selected_action": [binding.pk]})

    assert response.status_code == 302
    assert "CRM_LEAD_LIST_MENU" not in bound_codes(fake_portal)


# -- the fake's validation (what the code above relies on) ---------------------------------------------------
def test_fake_placement_methods_follow_the_contract(installed_portal, fake_portal):
    admin = PortalClient(installed_portal)
    with pytest.raises(B24Error) as exc:
        admin.call("placement.bind", {"PLACEMENT": "CRM_LEAD_LIST_MENU", "HANDLER": LIST_MENU})
    assert "already binded" in exc.value.description
    with pytest.raises(B24Error) as exc:
        admin.call("placement.bind", {"PLACEMENT": "CRM_LEAD_LIST_MENU", "HANDLER": "http://localhost/x"})
    assert exc.value.code == "ERROR_WRONG_HANDLER_URL"
    rows = admin.call("placement.get")
    assert {"placement", "userId", "handler", "options", "title", "description", "langAll"} <= set(rows[0])
    assert admin.call("placement.unbind", {"PLACEMENT": "CRM_LEAD_LIST_MENU", "HANDLER": LIST_MENU}) == {"count": 2}
    fake_portal.scopes.remove("crm")
    with pytest.raises(B24Error) as exc:
        admin.call("placement.bind", {"PLACEMENT": "CRM_LEAD_LIST_MENU", "HANDLER": LIST_MENU})
    assert exc.value.code == "ERROR_PLACEMENT_NOT_FOUND"


def test_fake_placement_methods_are_admin_only(installed_portal, fake_portal, client):
    from .conftest import APP_URL, post_frame

    fake_portal.add_user(5, is_admin=False)
    post_frame(client, APP_URL, fake_portal, user_id=5, is_admin=False)  # stores user 5's own token
    with pytest.raises(B24AccessDenied):
        PortalClient(installed_portal, user_id=5).call("placement.get")
    with pytest.raises(B24AccessDenied):
        PortalClient(installed_portal, user_id=5).call("userfieldtype.add",
                                                       {"USER_TYPE_ID": "x", "HANDLER": "https://a.example.com/"})


def test_install_runs_survive_an_update(client, installed_portal, fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        assert post_event(client, fake_portal.onappupdate()).status_code == 200
    run = InstallRun.objects.filter(portal=installed_portal).first()
    assert run.trigger == InstallRun.Trigger.UPDATE and run.status == InstallRun.Status.SUCCEEDED
    assert bound_codes(fake_portal) == DEFAULT_CODES
