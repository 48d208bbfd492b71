"""App events: ONAPPUNINSTALL, ONAPPUPDATE, ONAPPPAYMENT."""

from __future__ import annotations

import pytest

from installs.steps import APP_EVENTS
from oauth.models import PortalToken
from tenants.models import InstallRun, JournalEntry, Portal
from tests.conftest import post_event

pytestmark = pytest.mark.django_db


def test_uninstall_with_clean_purges_tokens_but_keeps_the_journal(client, installed_portal, fake_portal):
    journal_before = installed_portal.journal.count()
    key_before = installed_portal.handler_key

    response = post_event(client, fake_portal.onappuninstall(clean=True))

    assert response.status_code == 200
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.DELETED
    assert not PortalToken.objects.filter(portal=installed_portal).exists()
    assert installed_portal.journal.count() > journal_before
    assert installed_portal.handler_key != key_before


def test_uninstall_without_clean_keeps_data_for_a_reinstall(client, installed_portal, fake_portal):
    key_before = installed_portal.handler_key
    post_event(client, fake_portal.onappuninstall(clean=False))

    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.DELETED
    assert installed_portal.handler_key == key_before
    assert not installed_portal.tokens.exists()  # Bitrix24 revoked them


def test_uninstall_with_a_forged_application_token_changes_nothing(client, installed_portal, fake_portal):
    payload = fake_portal.onappuninstall(clean=True)
    payload["auth[application_token]"] = "0" * 32

    response = post_event(client, payload)

    assert response.status_code == 403
    assert "application_token" in response.json()["error"]
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.ACTIVE
    assert installed_portal.tokens.exists()


def test_an_event_for_an_unknown_portal_is_404(client, db, fake_portal):
    response = post_event(client, fake_portal.onappuninstall(clean=True))
    assert response.status_code == 404
    assert not Portal.objects.exists()


def test_update_stores_the_new_application_token_and_reruns_the_steps(
    client, installed_portal, fake_portal, django_capture_on_commit_callbacks
):
    old_token = fake_portal.application_token
    fake_portal.event_bindings.clear()  # Bitrix24 drops the app's handlers on update

    with django_capture_on_commit_callbacks(execute=True):
        response = post_event(client, fake_portal.onappupdate())

    assert response.status_code == 200
    installed_portal.refresh_from_db()
    assert fake_portal.application_token != old_token
    assert installed_portal.application_token_matches(fake_portal.application_token)
    assert not installed_portal.application_token_matches(old_token)
    assert installed_portal.install_runs.filter(trigger=InstallRun.Trigger.UPDATE, status="succeeded").exists()
    assert {b.event for b in fake_portal.event_bindings} >= set(APP_EVENTS)


def test_update_with_a_forged_access_token_changes_nothing(client, installed_portal, fake_portal):
    payload = fake_portal.onappupdate()
    payload["auth[access_token]"] = "a" * 64

    response = post_event(client, payload)

    assert response.status_code == 403
    installed_portal.refresh_from_db()
    assert not installed_portal.application_token_matches(payload["auth[application_token]"])
    assert installed_portal.install_runs.count() == 1


def test_payment_expired_past_the_grace_period_blocks_and_payment_unblocks(client, installed_portal, fake_portal):
    fake_portal.payment_expired, fake_portal.days = "Y", -3
    response = post_event(client, fake_portal.onapppayment(status="P", payment_expired="Y", days=-3))

    assert response.status_code == 200
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.BLOCKED
    assert installed_portal.blocked_reason == "payment required"

    fake_portal.payment_expired, fake_portal.days = "N", 30
    post_event(client, fake_portal.onapppayment(status="P", payment_expired="N", days=30))
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.ACTIVE
    assert installed_portal.payment_days == 30


def test_a_staff_block_is_not_lifted_by_a_payment(client, installed_portal, fake_portal):
    from tenants.actions import do_block_portal

    do_block_portal(installed_portal, reason="abuse report")
    post_event(client, fake_portal.onapppayment(status="P", payment_expired="N", days=30))

    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.BLOCKED
    assert installed_portal.blocked_reason == "abuse report"


def test_an_unsupported_event_is_refused(client, installed_portal, fake_portal):
    payload = fake_portal.onappuninstall(clean=False)
    payload["event"] = "ONCRMDEALADD"

    response = post_event(client, payload)

    assert response.status_code == 400
    installed_portal.refresh_from_db()
    assert installed_portal.status == Portal.Status.ACTIVE


def test_each_lifecycle_transition_is_journaled(client, installed_portal, fake_portal):
    post_event(client, fake_portal.onappuninstall(clean=False))
    transitions = list(installed_portal.journal.filter(kind=JournalEntry.Kind.LIFECYCLE)
                       .values_list("details__from", "details__to"))
    assert ("new", "active") in transitions and ("active", "deleted") in transitions
