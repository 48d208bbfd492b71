"""Capability discovery: one batch at install (first step) and daily, kept per portal, failing an install
that lacks a required scope or method with a reason naming it."""

from __future__ import annotations

import pytest

from oauth import capabilities
from oauth.models import PortalCapabilities
from tenants.models import InstallRun, Portal
from tests.conftest import post_install_frame

pytestmark = pytest.mark.django_db


@pytest.fixture
def extra_requirement():
    """Register a requirement for one test and take it out again."""
    added: list[str] = []

    def add(*methods: str, scope: str | None = None) -> None:
        before_m, before_s = set(capabilities._methods), set(capabilities._scopes)
        capabilities.require_methods(*methods, scope=scope, app="tests")
        added.extend(set(capabilities._methods) - before_m)
        added.extend(f"scope:{s}" for s in set(capabilities._scopes) - before_s)

    yield add
    for name in added:
        if name.startswith("scope:"):
            capabilities._scopes.pop(name[6:], None)
        else:
            capabilities._methods.pop(name, None)


def test_the_capability_step_runs_first_in_the_install(installed_portal):
    run = InstallRun.objects.filter(portal=installed_portal).latest()
    steps = list(run.steps.order_by("order", "name").values_list("name", "status"))
    assert steps[0] == ("capabilities", "succeeded")


def test_install_stores_scopes_methods_and_features_from_one_batch(client, b24_cloud, fake_portal,
                                                                  django_capture_on_commit_callbacks):
    fake_portal.features["rest_offline_extended"] = "Y"
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)
    caps = PortalCapabilities.objects.get(portal__member_id=fake_portal.member_id)
    assert caps.ok and caps.missing == []
    assert set(caps.scopes) == set(fake_portal.scopes)
    assert caps.has_method("event.bind") and caps.has_method("app.info")
    assert caps.features == {"rest_offline_extended": True, "rest_auth_connector": False}
    # one HTTP request carried scope + every method.get + every feature.get
    scope_call = fake_portal.calls("scope")[0]
    assert scope_call.in_batch
    batch_requests = {c.at for c in fake_portal.calls("batch")}
    assert len(fake_portal.calls("method.get")) == len(capabilities.required_methods())
    assert all(c.in_batch for c in fake_portal.calls("method.get") + fake_portal.calls("feature.get"))
    assert len(batch_requests) >= 1


def test_a_missing_scope_fails_the_install_naming_it(client, fake_portal, extra_requirement,
                                                     django_capture_on_commit_callbacks):
    extra_requirement("telephony.externalcall.register", scope="telephony")
    fake_portal.register_method("telephony.externalcall.register", lambda p, params, ctx: True, scope="telephony")
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)
    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    step = run.steps.get(name="capabilities")
    assert run.status == "failed" and step.status == "failed"
    assert "scope telephony" in step.message and "telephony.externalcall.register" in step.message
    assert Portal.objects.get(member_id=fake_portal.member_id).status == Portal.Status.NEW


def test_an_unknown_or_unavailable_method_fails_the_install_naming_it(client, fake_portal, extra_requirement,
                                                                     django_capture_on_commit_callbacks):
    extra_requirement("imaginary.method.add")
    fake_portal.register_method("crm.deal.add", lambda p, params, ctx: 1)
    fake_portal.unavailable_methods.add("crm.deal.add")
    extra_requirement("crm.deal.add")
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)
    step = InstallRun.objects.get(portal__member_id=fake_portal.member_id).steps.get(name="capabilities")
    assert "imaginary.method.add (does not exist)" in step.message
    assert "crm.deal.add (not available" in step.message


def test_the_daily_check_updates_the_record_and_journals_a_change(installed_portal, fake_portal, extra_requirement):
    from oauth.tasks import refresh_all_capabilities
    from tenants import schedule
    from tenants.models import JournalEntry

    extra_requirement("imaginary.method.add")
    schedule.mark_due(installed_portal, "capabilities")
    assert refresh_all_capabilities.apply().get() == 1
    caps = PortalCapabilities.objects.get(portal=installed_portal)
    assert not caps.ok and caps.missing == ["method imaginary.method.add (does not exist)"]
    assert JournalEntry.objects.filter(portal=installed_portal, kind="rest",
                                       message__contains="imaginary.method.add").count() == 1
    schedule.mark_due(installed_portal, "capabilities")
    assert refresh_all_capabilities.apply().get() == 1  # unchanged: no second journal line
    assert JournalEntry.objects.filter(portal=installed_portal, kind="rest",
                                       message__contains="imaginary.method.add").count() == 1


def test_require_methods_refuses_batch_and_remembers_scopes(extra_requirement):
    with pytest.raises(ValueError):
        capabilities.require_methods("batch")
    extra_requirement("userfieldtype.add", scope="placement")
    assert "placement" in capabilities.required_scopes() and "userfieldtype.add" in capabilities.required_methods()
