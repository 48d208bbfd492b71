"""Methods an administrator must confirm (spec §7): a REST-calling Celery task answered 401
METHOD_CONFIRM_WAITING parks (visible, journaled, neither failed nor retried); ONAPPMETHODCONFIRM, delivered
by the fake portal to the handler bound at install, resumes it (CONFIRMED=1) or fails it (0); a call never
decided times out; the grant belongs to one access token, so a refresh means waiting again.

The task is the install flow's "verify now" (`verify_portal`: app.info with the service token); the fake
portal is told that app.info needs confirmation."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from installs.steps import APP_EVENTS
from installs.tasks import verify_portal
from oauth.errors import B24MethodConfirmDenied, error_from_envelope
from oauth.models import ParkedCall, PortalToken
from oauth.retry import PARKED
from oauth.tasks import expire_parked_calls, redispatch_confirmed_calls
from tenants.models import JournalEntry, Portal
from tests.conftest import post_event
from tests.fakes.bitrix24 import FakePortal

METHOD = "app.info"
TASK = "tenants.tasks.verify_portal"


def service_token_hash(portal: Portal) -> str:
    token = PortalToken.objects.get(portal=portal, is_service=True)
    return hashlib.sha256(token.access_token.encode()).hexdigest()


def park(portal: Portal, fake: FakePortal) -> ParkedCall:
    fake.require_confirmation(METHOD)
    assert verify_portal.delay(portal.pk).get() == PARKED
    return ParkedCall.objects.get(portal=portal, state=ParkedCall.State.WAITING)


def confirm_event(fake: FakePortal, *, confirmed: str = "1", token: str = "", method: str = METHOD,
                  application_token: str | None = None) -> dict[str, str]:
    data = {"METHOD": method, "CONFIRMED": confirmed, "LANGUAGE_ID": "en", **({"TOKEN": token} if token else {})}
    return fake.event_payload("ONAPPMETHODCONFIRM", data, with_tokens=False, application_token=application_token)


def test_the_waiting_and_denied_answers_are_classified_as_such() -> None:
    waiting = error_from_envelope("METHOD_CONFIRM_WAITING", "Waiting for confirmation", http_status=401,
                                  method="voximplant.user.get")
    denied = error_from_envelope("METHOD_CONFIRM_DENIED", "Method call denied", http_status=403,
                                 method="voximplant.user.get")

    assert waiting.awaits_confirmation is True and waiting.retryable is False
    assert isinstance(denied, B24MethodConfirmDenied) and denied.awaits_confirmation is False
    assert "denied the app voximplant.user.get" in denied.description


@pytest.mark.django_db
def test_a_call_waiting_for_confirmation_parks_its_task_instead_of_failing_or_retrying(
        installed_portal: Portal, fake_portal: FakePortal) -> None:
    parked = park(installed_portal, fake_portal)

    assert (parked.method, parked.task_name, parked.args, parked.kwargs) == (METHOD, TASK, [installed_portal.pk], {})
    assert parked.token_hash == service_token_hash(installed_portal)
    assert fake_portal.count(METHOD, error="METHOD_CONFIRM_WAITING") == 1  # one call: no retry loop
    entry = JournalEntry.objects.filter(portal=installed_portal, message__contains="must confirm").get()
    assert entry.level == JournalEntry.Level.WARNING and METHOD in entry.message
    assert not JournalEntry.objects.filter(portal=installed_portal, message__startswith="verify failed").exists()
    assert "ONAPPMETHODCONFIRM" in APP_EVENTS
    assert "ONAPPMETHODCONFIRM" in {b.event for b in fake_portal.event_bindings}


@pytest.mark.django_db
def test_the_same_work_is_parked_once(installed_portal: Portal, fake_portal: FakePortal) -> None:
    park(installed_portal, fake_portal)

    assert verify_portal.delay(installed_portal.pk).get() == PARKED

    assert ParkedCall.objects.filter(portal=installed_portal).count() == 1


@pytest.mark.django_db
def test_a_parked_call_never_confirmed_times_out_to_a_clear_failure(installed_portal: Portal,
                                                                    fake_portal: FakePortal, settings) -> None:
    settings.B24_METHOD_CONFIRM_TIMEOUT_HOURS = 72
    parked = park(installed_portal, fake_portal)
    ParkedCall.objects.filter(pk=parked.pk).update(parked_at=timezone.now() - timedelta(hours=71))
    assert expire_parked_calls.delay().get() == 0
    ParkedCall.objects.filter(pk=parked.pk).update(parked_at=timezone.now() - timedelta(hours=73))

    assert expire_parked_calls.delay().get() == 1

    parked.refresh_from_db()
    assert parked.state == ParkedCall.State.FAILED
    assert parked.reason == f"no administrator confirmed the REST method {METHOD} within 72 hours"
    assert JournalEntry.objects.filter(portal=installed_portal, level="error",
                                       message__contains="within 72 hours").exists()


@pytest.mark.django_db
def test_onappmethodconfirm_with_a_wrong_application_token_changes_nothing(
        client: Client, installed_portal: Portal, fake_portal: FakePortal) -> None:
    parked = park(installed_portal, fake_portal)

    response = post_event(client, confirm_event(fake_portal, application_token="f" * 32))

    assert response.status_code == 403
    parked.refresh_from_db()
    assert parked.state == ParkedCall.State.WAITING


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "value"), [("CONFIRMED", "yes"), ("CONFIRMED", ""), ("METHOD", "app info;"),
                                              ("METHOD", ""), ("TOKEN", "<script>")])
def test_a_malformed_onappmethodconfirm_is_refused(client: Client, installed_portal: Portal,
                                                   fake_portal: FakePortal, field: str, value: str) -> None:
    parked = park(installed_portal, fake_portal)
    payload = confirm_event(fake_portal)
    payload[f"data[{field}]"] = value

    assert post_event(client, payload).status_code == 400
    parked.refresh_from_db()
    assert parked.state == ParkedCall.State.WAITING


@pytest.mark.django_db
def test_a_confirmation_for_another_token_leaves_the_parked_call_waiting(
        client: Client, installed_portal: Portal, fake_portal: FakePortal) -> None:
    parked = park(installed_portal, fake_portal)

    response = post_event(client, confirm_event(fake_portal, token="a" * 64))

    assert response.status_code == 200 and response.json()["decided"] == 0
    parked.refresh_from_db()
    assert parked.state == ParkedCall.State.WAITING


# -- delivered by the fake portal to the handler bound at install (a live server) -------------------------

@pytest.fixture
def live_portal(live_server: Any, settings: Any,
                install_portal: Callable[..., tuple[Portal, FakePortal]]) -> tuple[Portal, FakePortal]:
    """A portal installed while PUBLIC_URL is the live server, so its ONAPPMETHODCONFIRM handler reaches us."""
    settings.PUBLIC_URL = live_server.url
    return install_portal()


@pytest.mark.django_db(transaction=True)
def test_an_administrators_confirmation_resumes_the_parked_task(live_portal: tuple[Portal, FakePortal]) -> None:
    portal, fake = live_portal
    parked = park(portal, fake)

    outcomes = fake.decide_method(METHOD, confirmed=True)

    assert [status for _handler, status in outcomes] == [200]
    parked.refresh_from_db()
    assert parked.state == ParkedCall.State.RESUMED
    assert fake.count(METHOD, status=200) == 1  # the resumed task called app.info again, granted this time
    assert JournalEntry.objects.filter(portal=portal, kind=JournalEntry.Kind.EVENT,
                                       message__contains=f"confirmed the REST method {METHOD}").exists()


@pytest.mark.django_db(transaction=True)
def test_an_administrators_denial_fails_the_parked_task_with_the_reason(
        live_portal: tuple[Portal, FakePortal]) -> None:
    portal, fake = live_portal
    parked = park(portal, fake)

    assert [status for _handler, status in fake.decide_method(METHOD, confirmed=False)] == [200]

    parked.refresh_from_db()
    assert parked.state == ParkedCall.State.FAILED
    assert parked.reason == f"an administrator of the portal denied the app the method {METHOD}"
    assert fake.count(METHOD, status=200) == 0


@pytest.mark.django_db(transaction=True)
def test_a_denied_method_fails_the_task_with_a_clear_reason(live_portal: tuple[Portal, FakePortal]) -> None:
    portal, fake = live_portal
    park(portal, fake)
    fake.decide_method(METHOD, confirmed=False)

    assert verify_portal.delay(portal.pk).get() == "METHOD_CONFIRM_DENIED"

    entry = JournalEntry.objects.filter(portal=portal, message__startswith="verify failed").get()
    assert f"denied the app {METHOD}" in entry.message
    assert ParkedCall.objects.filter(portal=portal, state=ParkedCall.State.WAITING).count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_refreshed_token_must_be_confirmed_again(live_portal: tuple[Portal, FakePortal]) -> None:
    portal, fake = live_portal
    first = park(portal, fake)
    fake.decide_method(METHOD, confirmed=True)
    fake.expire_access_tokens()

    assert verify_portal.delay(portal.pk).get() == PARKED  # the client refreshed: the new token waits again

    second = ParkedCall.objects.get(portal=portal, state=ParkedCall.State.WAITING)
    assert second.pk != first.pk and second.token_hash != first.token_hash
    assert second.token_hash == service_token_hash(portal)


@pytest.mark.django_db
def test_a_confirmed_call_whose_resume_was_lost_is_dispatched_again_by_the_sweeper(
        installed_portal: Portal, fake_portal: FakePortal) -> None:
    owed = ParkedCall.objects.create(portal=installed_portal, method=METHOD, task_name=TASK,
                                     args=[installed_portal.pk], token_hash="0" * 64,
                                     state=ParkedCall.State.CONFIRMED,
                                     decided_at=timezone.now() - timedelta(seconds=30))
    assert redispatch_confirmed_calls.delay().get() == 0  # within its grace: the first dispatch may still come
    ParkedCall.objects.filter(pk=owed.pk).update(decided_at=timezone.now() - timedelta(minutes=5))

    assert redispatch_confirmed_calls.delay().get() == 1

    owed.refresh_from_db()
    assert owed.state == ParkedCall.State.RESUMED
    assert fake_portal.count(METHOD, status=200) == 1  # verify_portal ran with its arguments
    assert redispatch_confirmed_calls.delay().get() == 0
