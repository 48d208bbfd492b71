"""Changes made in Bitrix24 flow back: offline lead events bound at install, claimed with clear=0, turned into
card_changed / card_deleted replies, acknowledged by process_id, failures marked with event.offline.error;
our own writes do not come back (auth_connector, or recognised by their state)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from django.test import Client

from oauth.client import PortalClient
from records.applying import apply_round
from records.channels import OfflineFeed
from records.intake import do_accept_job
from records.models import Record, Reply, StageMapping
from records.offline import OFFLINE_CHECK, bind_offline_events, poll_offline_events, poll_portal
from tenants import schedule
from tenants.models import PortalCheck
from tests.conftest import install_through_the_frame
from tests.fakes.b24_messageservice import install_messageservice
from tests.fakes.b24_offline import enable_offline_events, queue
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal

pytestmark = pytest.mark.django_db

IVAN = {"full_name": "Иван Иванов", "phone": "+77001112233", "stage": "NEW"}
PERSON = 7  # a Bitrix24 user who edits leads by hand


@pytest.fixture
def install_with_offline(b24_cloud: FakeBitrix24Cloud,
                         django_capture_on_commit_callbacks: Any) -> Callable[..., tuple[Any, FakePortal]]:
    def install(*, offline: bool = True, auth_connector: bool = True) -> tuple[Any, FakePortal]:
        fake = install_messageservice(b24_cloud.create_portal())
        if offline:
            enable_offline_events(fake, auth_connector=auth_connector)
        else:
            enable_offline_events(fake)
            fake.features["rest_offline_extended"] = "N"
        portal = install_through_the_frame(Client(), fake, django_capture_on_commit_callbacks)
        fake.add_user(PERSON, name="Пётр", last_name="Менеджеров", email="p@example.com", is_admin=False)
        return portal, fake

    return install


@pytest.fixture
def capture(django_capture_on_commit_callbacks: Any) -> Iterator[Callable[[], Any]]:
    yield lambda: django_capture_on_commit_callbacks(execute=True)


def submit(capture: Callable[[], Any], portal: Any, action: str = "create", **fields: Any) -> None:
    """A job through the intake, applied at once (eager Celery on commit)."""
    with capture():
        do_accept_job(portal, action=action, external_id="123", fields=fields or IVAN,
                      reply_queue="bitrix.responses")


def edit_by_hand(fake: FakePortal, lead_id: int, method: str = "crm.lead.update", **fields: Any) -> None:
    token = fake.issue_tokens(user_id=PERSON, is_admin=False)["access_token"]
    body: dict[str, Any] = {"auth": token, "id": lead_id}
    if fields:
        body["fields"] = fields
    response = requests.post(fake.client_endpoint + method, json=body, timeout=5)
    assert response.status_code == 200, response.text


def change_replies() -> list[dict[str, Any]]:
    return [r.body for r in Reply.objects.order_by("pk") if r.body.get("action") in ("card_changed", "card_deleted")]


def test_offline_lead_events_are_bound_with_our_auth_connector_at_install(install_with_offline: Any) -> None:
    portal, fake = install_with_offline()
    feed = OfflineFeed.objects.get(portal=portal)
    assert (feed.status, feed.auth_connector) == (OfflineFeed.Status.BOUND, "b24portal")
    bound = {(b.event, b.auth_connector) for b in fake.event_bindings if b.offline}
    assert bound == {("ONCRMLEADUPDATE", "b24portal"), ("ONCRMLEADDELETE", "b24portal")}
    assert portal.install_runs.latest("pk").status == "succeeded"


def test_without_rest_offline_extended_nothing_is_bound_and_admin_shows_it_unavailable(
        install_with_offline: Any, admin_client: Client) -> None:
    portal, fake = install_with_offline(offline=False)
    feed = OfflineFeed.objects.get(portal=portal)
    assert feed.status == OfflineFeed.Status.UNAVAILABLE
    assert "rest_offline_extended = N" in feed.detail
    assert not [b for b in fake.event_bindings if b.offline]
    assert portal.install_runs.latest("pk").status == "succeeded"  # everything else works
    page = admin_client.get("/admin/records/offlinefeed/")
    assert page.status_code == 200 and "Unavailable (feature.get rest_offline_extended = N)" in page.content.decode()
    assert poll_portal(portal).pages == 0 and fake.count("event.offline.get") == 0


def test_a_refused_bind_is_shown_as_failed_without_failing_the_install(install_with_offline: Any) -> None:
    portal, fake = install_with_offline()
    fake.event_bindings[:] = [b for b in fake.event_bindings if not b.offline]
    fake.fail_next("event.bind", "ACCESS_DENIED", "Access denied!", 403)
    report = bind_offline_events(portal, PortalClient(portal))
    assert report.startswith("offline events NOT bound")
    feed = OfflineFeed.objects.get(portal=portal)
    assert feed.status == OfflineFeed.Status.FAILED and "ACCESS_DENIED" in feed.detail
    assert poll_portal(portal).pages == 0


def test_a_lead_moved_by_a_person_sends_card_changed_with_the_external_stage(
        install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    StageMapping.objects.create(portal=portal, external_stage="won", status_id="CONVERTED")
    StageMapping.objects.create(portal=portal, external_stage="NEW", status_id="NEW")
    submit(capture, portal)
    record = Record.objects.get()

    edit_by_hand(fake, record.lead_id, STATUS_ID="CONVERTED")
    with capture():
        report = poll_portal(portal)

    assert (report.events, report.changes) == (1, 1)
    (body,) = change_replies()
    assert {k: body[k] for k in ("status", "action", "bitrix_lead_id", "stage")} == {
        "status": "success", "action": "card_changed", "bitrix_lead_id": record.lead_id, "stage": "won"}
    assert body["user"] == {"id": "123", "full_name": "Иван Иванов", "phone": "+77001112233", "stage": "won"}
    assert Reply.objects.get(body__action="card_changed").target == "bitrix.responses"
    record.refresh_from_db()
    assert record.stage == "won"
    assert queue(fake) == []  # acknowledged: event.offline.clear by process_id
    assert fake.calls("event.offline.get")[0].params["clear"] == 0


def test_our_own_writes_with_the_auth_connector_do_not_come_back(install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    submit(capture, portal)
    submit(capture, portal, action="move", stage="IN_PROCESS")
    submit(capture, portal, action="update", full_name="Иван Петров")
    assert queue(fake) == []
    assert all(c.params.get("auth_connector") == "b24portal"
               for c in fake.calls("crm.lead.update", in_batch=True) + fake.calls("crm.lead.add", in_batch=True))
    with capture():
        poll_portal(portal)
    assert change_replies() == []


def test_without_rest_auth_connector_our_own_write_is_recognised_by_its_state(
        install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline(auth_connector=False)
    assert OfflineFeed.objects.get(portal=portal).auth_connector == ""
    submit(capture, portal)
    submit(capture, portal, action="move", stage="IN_PROCESS")
    assert len(queue(fake)) == 1  # Bitrix24 recorded our update

    with capture():
        report = poll_portal(portal)
    assert (report.events, report.echoes, report.changes) == (1, 1, 0)
    assert change_replies() == [] and queue(fake) == []

    edit_by_hand(fake, Record.objects.get().lead_id, NAME="Ivan", LAST_NAME="Ivanov")
    with capture():
        poll_portal(portal)
    (body,) = change_replies()
    assert body["user"]["full_name"] == "Ivan Ivanov" and body["stage"] == "IN_PROCESS"


def test_an_event_of_a_record_with_a_job_in_flight_waits_for_that_job_and_is_then_compared(
        install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    submit(capture, portal)
    record = Record.objects.get()
    do_accept_job(portal, action="update", external_id="123", fields={"full_name": "Иван Петров"},
                  reply_queue="bitrix.responses")  # stored, not applied yet (its commit callback is not run)
    edit_by_hand(fake, record.lead_id, STATUS_ID="CONVERTED")

    report = poll_portal(portal)
    assert (report.events, report.deferred, report.changes) == (1, 1, 0)
    assert queue(fake)[0]["PROCESS_ID"] == OfflineFeed.objects.get(portal=portal).process_id  # kept, not cleared

    with capture():
        apply_round(portal)
        report = poll_portal(portal)
    assert (report.events, report.changes) == (1, 1)
    (body,) = change_replies()
    assert body["stage"] == "CONVERTED" and body["user"]["full_name"] == "Иван Петров"
    assert queue(fake) == []


def test_a_lead_deleted_by_a_person_sends_card_deleted(install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    submit(capture, portal)
    lead_id = Record.objects.get().lead_id
    edit_by_hand(fake, lead_id, method="crm.lead.delete")
    with capture():
        poll_portal(portal)
    (body,) = change_replies()
    assert (body["action"], body["bitrix_lead_id"], body["user"]) == ("card_deleted", lead_id, {"id": "123"})


def test_a_lead_that_is_not_one_of_our_records_is_acknowledged_without_a_reply(
        install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    token = fake.issue_tokens(user_id=PERSON, is_admin=False)["access_token"]
    lead_id = requests.post(fake.client_endpoint + "crm.lead.add", json={"auth": token, "fields": {"TITLE": "x"}},
                            timeout=5).json()["result"]
    edit_by_hand(fake, lead_id, TITLE="y")
    report = poll_portal(portal)
    assert report.events == 1 and change_replies() == [] and queue(fake) == []


def test_an_event_that_fails_is_marked_with_event_offline_error_and_the_others_are_cleared(
        install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    submit(capture, portal)
    lead_id = Record.objects.get().lead_id
    edit_by_hand(fake, lead_id, STATUS_ID="JUNK")
    fake.fail_next("crm.lead.get", "ACCESS_DENIED", "Access denied", 403)
    with capture():
        report = poll_portal(portal)

    assert report.failed == 1 and change_replies() == []
    (left,) = queue(fake)
    assert left["ERROR"] == 1 and left["PROCESS_ID"] == ""
    assert fake.count("event.offline.error", in_batch=True) == 1
    feed = OfflineFeed.objects.get(portal=portal)
    assert feed.events_failed == 1 and "ACCESS_DENIED" in feed.last_error


def test_a_run_that_died_before_the_clear_is_read_again_without_a_second_reply(
        install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    submit(capture, portal)
    edit_by_hand(fake, Record.objects.get().lead_id, STATUS_ID="CONVERTED")
    fake.fail_next("event.offline.clear", "INTERNAL_SERVER_ERROR", "boom", 500)
    with capture(), pytest.raises(Exception):  # noqa: B017 - whatever the ack's failure is, the run stops
        poll_portal(portal)
    assert len(change_replies()) == 1
    assert queue(fake)[0]["PROCESS_ID"] == OfflineFeed.objects.get(portal=portal).process_id  # still claimed

    with capture():
        report = poll_portal(portal)
    assert report.events == 1 and report.changes == 0
    assert len(change_replies()) == 1 and queue(fake) == []


def test_parallel_callers_do_not_take_our_claimed_events(install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    submit(capture, portal)
    edit_by_hand(fake, Record.objects.get().lead_id, STATUS_ID="CONVERTED")
    fake.fail_next("event.offline.clear", "INTERNAL_SERVER_ERROR", "boom", 500)
    with capture(), pytest.raises(Exception):  # noqa: B017
        poll_portal(portal)
    admin = fake.issue_tokens(user_id=1, is_admin=True)["access_token"]
    other = requests.post(fake.client_endpoint + "event.offline.get",
                          json={"auth": admin, "clear": 0, "auth_connector": "b24portal"}, timeout=5).json()
    assert other["result"]["events"] == []


def test_the_periodic_task_polls_the_portals_that_are_due(install_with_offline: Any, capture: Any) -> None:
    portal, fake = install_with_offline()
    assert PortalCheck.objects.filter(portal=portal, kind=OFFLINE_CHECK).exists()
    submit(capture, portal)
    edit_by_hand(fake, Record.objects.get().lead_id, STATUS_ID="CONVERTED")
    PortalCheck.objects.filter(kind=OFFLINE_CHECK).update(due_at="2100-01-01T00:00:00Z")
    assert poll_offline_events() == 0 and change_replies() == []

    schedule.mark_due(portal, OFFLINE_CHECK)
    with capture():
        assert poll_offline_events() == 1
    assert [b["action"] for b in change_replies()] == ["card_changed"]
