"""Staff actions that find a registration of ours already gone make the bindings check due at once, so the
next beat tick reconciles the portal instead of the daily sweep (issue 11); unrelated errors make nothing
due."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from oauth.client import PortalClient
from placements import actions, tasks
from placements.bindings import BINDINGS_CHECK
from placements.models import Binding
from tests import checks
from tests.fakes import b24_placements

pytestmark = pytest.mark.django_db

LIST_MENU = "https://app.b24portal.test/b24/placements/crm-list-menu/"
DEFAULT_CODES = {"CRM_LEAD_LIST_MENU", "CRM_DEAL_LIST_MENU", "CRM_CONTACT_LIST_MENU", "CRM_COMPANY_LIST_MENU"}


def bound_codes(fake_portal) -> set[str]:
    return {row["placement"] for row in b24_placements.placements(fake_portal) if row["handler"] == LIST_MENU}








@pytest.fixture
def staff(db):
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")


@pytest.fixture
def portal(installed_portal):
    checks.push_away(installed_portal, BINDINGS_CHECK)
    return installed_portal


def test_a_field_type_delete_answered_not_found_makes_the_check_due_and_the_next_tick_repairs_the_rest(
        portal, fake_portal, staff):
    fake_portal.onappupdate()  # the widgets go...
    b24_placements.state(fake_portal)["types"].clear()  # ...and the field type is gone too
    binding = Binding.objects.get(portal=portal, kind=Binding.Kind.USERFIELD_TYPE)

    assert tasks.unbind_binding.delay(binding.pk, staff.pk).get() == "unbound"  # what staff asked for

    assert fake_portal.count("userfieldtype.delete", error="ERROR_NOT_FOUND") == 1
    assert Binding.objects.get(pk=binding.pk).state == Binding.State.UNBOUND
    assert checks.is_due(portal, BINDINGS_CHECK)
    assert checks.trigger_entries(portal, BINDINGS_CHECK) == ["bindings check due now: userfieldtype.delete answered ERROR_NOT_FOUND"]

    assert tasks.reconcile_all_bindings.delay().get() == 1  # the next beat tick

    assert bound_codes(fake_portal) == DEFAULT_CODES
    assert b24_placements.userfield_types(fake_portal) == []  # the staff unbind is respected
    assert not checks.is_due(portal, BINDINGS_CHECK)


def test_a_widget_unbind_that_finds_nothing_makes_the_check_due_and_the_next_tick_repairs_the_rest(
        portal, fake_portal, staff):
    fake_portal.onappupdate()
    binding = Binding.objects.get(portal=portal, code="CRM_DEAL_LIST_MENU")

    assert tasks.unbind_binding.delay(binding.pk, staff.pk).get() == "unbound"

    assert checks.is_due(portal, BINDINGS_CHECK)
    assert checks.trigger_entries(portal, BINDINGS_CHECK) == [
        "bindings check due now: CRM_DEAL_LIST_MENU was no longer bound when staff unbound it"]
    tasks.reconcile_all_bindings.delay().get()
    assert bound_codes(fake_portal) == DEFAULT_CODES - {"CRM_DEAL_LIST_MENU"}


def test_a_widget_unbind_that_finds_its_record_makes_nothing_due(portal, fake_portal, staff):
    binding = Binding.objects.get(portal=portal, code="CRM_DEAL_LIST_MENU")
    assert tasks.unbind_binding.delay(binding.pk, staff.pk).get() == "unbound"
    assert not checks.is_due(portal, BINDINGS_CHECK) and checks.trigger_entries(portal, BINDINGS_CHECK) == []


def test_a_staff_rebind_that_sees_other_widgets_gone_makes_the_check_due(portal, fake_portal, staff):
    binding = Binding.objects.get(portal=portal, code="CRM_DEAL_LIST_MENU")
    tasks.unbind_binding.delay(binding.pk, staff.pk).get()
    fake_portal.onappupdate()

    tasks.rebind_binding.delay(binding.pk, staff.pk).get()

    assert bound_codes(fake_portal) == {"CRM_DEAL_LIST_MENU"}  # the rebind repairs only its own
    assert checks.is_due(portal, BINDINGS_CHECK)
    (entry,) = checks.trigger_entries(portal, BINDINGS_CHECK)
    assert "CRM_LEAD_LIST_MENU" in entry and entry.endswith("no longer bound in the portal")
    tasks.reconcile_all_bindings.delay().get()
    assert bound_codes(fake_portal) == DEFAULT_CODES


def test_a_staff_rebind_with_everything_else_in_place_makes_nothing_due(portal, fake_portal, staff):
    binding = Binding.objects.get(portal=portal, code="CRM_DEAL_LIST_MENU")
    tasks.unbind_binding.delay(binding.pk, staff.pk).get()
    tasks.rebind_binding.delay(binding.pk, staff.pk).get()
    assert bound_codes(fake_portal) == DEFAULT_CODES
    assert not checks.is_due(portal, BINDINGS_CHECK) and checks.trigger_entries(portal, BINDINGS_CHECK) == []


@pytest.mark.parametrize(("method", "kind", "code", "description", "http_status"), [
    ("userfieldtype.delete", Binding.Kind.USERFIELD_TYPE, "ACCESS_DENIED", "Access denied!", 403),
    ("userfieldtype.delete", Binding.Kind.USERFIELD_TYPE, "QUERY_LIMIT_EXCEEDED", "Too many requests", 503),
    ("placement.unbind", Binding.Kind.PLACEMENT, "ACCESS_DENIED", "Access denied!", 403),
    ("placement.unbind", Binding.Kind.PLACEMENT, "QUERY_LIMIT_EXCEEDED", "Too many requests", 503),
])
def test_an_unrelated_error_of_a_staff_unbind_makes_nothing_due(portal, fake_portal, staff, method, kind, code,
                                                               description, http_status):
    binding = Binding.objects.filter(portal=portal, kind=kind).order_by("code").first()
    fake_portal.fail_next(method, code, description, http_status, times=100)

    result = actions.do_unbind(binding, staff_user=staff, client=PortalClient(portal, max_wait=0))

    assert result.startswith(code)
    assert Binding.objects.get(pk=binding.pk).state == Binding.State.BOUND
    assert not checks.is_due(portal, BINDINGS_CHECK) and checks.trigger_entries(portal, BINDINGS_CHECK) == []


def test_a_rebind_answered_placement_not_found_makes_nothing_due(portal, fake_portal, staff):
    """ERROR_PLACEMENT_NOT_FOUND says the portal has no such placement code (no crm scope): a reconcile
    would get the same answer, so it is no trigger."""
    binding = Binding.objects.get(portal=portal, code="CRM_DEAL_LIST_MENU")
    tasks.unbind_binding.delay(binding.pk, staff.pk).get()
    fake_portal.fail_next("placement.bind", "ERROR_PLACEMENT_NOT_FOUND", "Placement not found")

    report = actions.do_rebind(binding, staff_user=staff)

    assert "ERROR_PLACEMENT_NOT_FOUND" in report.errors["CRM_DEAL_LIST_MENU"]
    assert not checks.is_due(portal, BINDINGS_CHECK) and checks.trigger_entries(portal, BINDINGS_CHECK) == []
