"""Tests of the fake's offline events (plain pytest: no Django, no DB)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from .b24_offline import enable_offline_events, queue, record_change
from .bitrix24 import FakeBitrix24Cloud, FakePortal


@pytest.fixture
def portal(portal: FakePortal) -> FakePortal:
    return enable_offline_events(portal)


def call(portal: FakePortal, method: str, token: str, **params: Any) -> Any:
    response = requests.post(portal.client_endpoint + method, json={"auth": token, **params}, timeout=5)
    assert response.status_code == 200, response.text
    return response.json()["result"]


def bind(portal: FakePortal, token: str, event: str = "ONCRMLEADUPDATE", **params: Any) -> None:
    assert call(portal, "event.bind", token, event=event, event_type="offline", **params) is True


def lead(lead_id: int) -> dict[str, Any]:
    return {"FIELDS": {"ID": lead_id}}


def test_a_change_is_recorded_only_for_a_bound_offline_event(portal: FakePortal, token: str) -> None:
    assert record_change(portal, "ONCRMLEADUPDATE", lead(1)) == 0
    bind(portal, token)
    assert record_change(portal, "ONCRMLEADUPDATE", lead(1)) == 1
    assert record_change(portal, "ONCRMLEADDELETE", lead(1)) == 0
    assert [r["EVENT_NAME"] for r in queue(portal)] == ["ONCRMLEADUPDATE"]


def test_the_queue_keeps_one_record_per_object_with_its_latest_time(
        cloud: FakeBitrix24Cloud, portal: FakePortal, token: str) -> None:
    bind(portal, token)
    record_change(portal, "ONCRMLEADUPDATE", lead(1), user_id=1)
    cloud.advance(5)
    record_change(portal, "ONCRMLEADUPDATE", lead(1), user_id=7)
    record_change(portal, "ONCRMLEADUPDATE", lead(2))
    records = queue(portal)
    assert [r["EVENT_DATA"] for r in records] == [lead(1), lead(2)]
    assert records[0]["TIMESTAMP_X"] == cloud.now()
    assert records[0]["EVENT_ADDITIONAL"] == {"user_id": "7"}


def test_get_with_the_default_clear_deletes_what_it_returns(portal: FakePortal, token: str) -> None:
    bind(portal, token)
    record_change(portal, "ONCRMLEADUPDATE", lead(1))
    result = call(portal, "event.offline.get", token)
    assert result["process_id"] is None
    assert [e["EVENT_DATA"] for e in result["events"]] == [lead(1)]
    assert set(result["events"][0]) >= {"ID", "TIMESTAMP_X", "EVENT_NAME", "EVENT_DATA", "EVENT_ADDITIONAL",
                                        "MESSAGE_ID"}
    assert queue(portal) == []


def test_parallel_callers_with_clear_0_get_different_records(portal: FakePortal, token: str) -> None:
    bind(portal, token)
    for lead_id in (1, 2, 3):
        record_change(portal, "ONCRMLEADUPDATE", lead(lead_id))
    first = call(portal, "event.offline.get", token, clear=0, limit=2)
    second = call(portal, "event.offline.get", token, clear=0, limit=2)
    assert first["process_id"] and second["process_id"] and first["process_id"] != second["process_id"]
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in first["events"]] == [1, 2]
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in second["events"]] == [3]
    assert call(portal, "event.offline.get", token, clear=0)["events"] == []
    assert len(queue(portal)) == 3  # hidden, not deleted


def test_a_caller_passing_its_process_id_gets_its_unacknowledged_records_again(
        portal: FakePortal, token: str) -> None:
    bind(portal, token)
    record_change(portal, "ONCRMLEADUPDATE", lead(1))
    taken = call(portal, "event.offline.get", token, clear=0, process_id="ours")
    assert taken["process_id"] == "ours"
    record_change(portal, "ONCRMLEADUPDATE", lead(2))
    again = call(portal, "event.offline.get", token, clear=0, process_id="ours")
    assert [e["EVENT_DATA"]["FIELDS"]["ID"] for e in again["events"]] == [1, 2]


def test_a_change_of_a_taken_object_gets_a_new_record(portal: FakePortal, token: str) -> None:
    bind(portal, token)
    record_change(portal, "ONCRMLEADUPDATE", lead(1))
    taken = call(portal, "event.offline.get", token, clear=0)
    record_change(portal, "ONCRMLEADUPDATE", lead(1))
    assert call(portal, "event.offline.clear", token, process_id=taken["process_id"]) is True
    left = queue(portal)
    assert len(left) == 1 and left[0]["PROCESS_ID"] == "" and left[0]["EVENT_DATA"] == lead(1)


def test_clear_deletes_the_processes_records_or_only_those_named(portal: FakePortal, token: str) -> None:
    bind(portal, token)
    for lead_id in (1, 2, 3):
        record_change(portal, "ONCRMLEADUPDATE", lead(lead_id))
    taken = call(portal, "event.offline.get", token, clear=0)
    ids = [e["ID"] for e in taken["events"]]
    call(portal, "event.offline.clear", token, process_id=taken["process_id"], id=[ids[0]])
    assert len(queue(portal)) == 2
    call(portal, "event.offline.clear", token, process_id=taken["process_id"],
         message_id=[taken["events"][1]["MESSAGE_ID"]])
    assert [r["EVENT_DATA"] for r in queue(portal)] == [lead(3)]
    call(portal, "event.offline.clear", token, process_id="someone-else")
    assert len(queue(portal)) == 1
    call(portal, "event.offline.clear", token, process_id=taken["process_id"])
    assert queue(portal) == []


def test_clear_and_error_need_a_process_id(portal: FakePortal, token: str) -> None:
    for method in ("event.offline.clear", "event.offline.error"):
        response = requests.post(portal.client_endpoint + method, json={"auth": token}, timeout=5)
        assert response.status_code == 400
        assert response.json()["error"] == "ERROR_ARGUMENT"


def test_error_marks_records_which_then_survive_a_clear_and_are_read_with_error_1(
        portal: FakePortal, token: str) -> None:
    bind(portal, token)
    record_change(portal, "ONCRMLEADUPDATE", lead(1))
    record_change(portal, "ONCRMLEADUPDATE", lead(2))
    taken = call(portal, "event.offline.get", token, clear=0)
    failed = taken["events"][0]["MESSAGE_ID"]
    assert call(portal, "event.offline.error", token, process_id=taken["process_id"], message_id=[failed]) is True
    call(portal, "event.offline.clear", token, process_id=taken["process_id"])
    assert call(portal, "event.offline.get", token, clear=0)["events"] == []
    errored = call(portal, "event.offline.get", token, clear=0, error=1)["events"]
    assert [e["MESSAGE_ID"] for e in errored] == [failed]


def test_get_filters_orders_and_limits(cloud: FakeBitrix24Cloud, portal: FakePortal, token: str) -> None:
    bind(portal, token)
    bind(portal, token, "ONCRMLEADDELETE")
    record_change(portal, "ONCRMLEADUPDATE", lead(1))
    cloud.advance(1)
    record_change(portal, "ONCRMLEADDELETE", lead(2))
    cloud.advance(1)
    record_change(portal, "ONCRMLEADUPDATE", lead(3))
    deletes = call(portal, "event.offline.get", token, clear=0, filter={"=EVENT_NAME": "ONCRMLEADDELETE"})
    assert [e["EVENT_DATA"] for e in deletes["events"]] == [lead(2)]
    newest = call(portal, "event.offline.get", token, clear=0, order={"TIMESTAMP_X": "DESC"}, limit=1)
    assert [e["EVENT_DATA"] for e in newest["events"]] == [lead(3)]


def test_an_apps_own_write_with_its_auth_connector_is_not_recorded_in_that_queue(
        portal: FakePortal, token: str) -> None:
    bind(portal, token, auth_connector="b24portal")
    assert record_change(portal, "ONCRMLEADUPDATE", lead(1), params={"auth_connector": "b24portal"}) == 0
    assert record_change(portal, "ONCRMLEADUPDATE", lead(1), params={}) == 1
    assert call(portal, "event.offline.get", token, clear=0)["events"] == []  # the default queue is empty
    own = call(portal, "event.offline.get", token, clear=0, auth_connector="b24portal")["events"]
    assert [e["EVENT_DATA"] for e in own] == [lead(1)]


def test_without_the_auth_connector_feature_every_change_is_recorded(
        cloud: FakeBitrix24Cloud, token: str) -> None:
    portal = enable_offline_events(cloud.create_portal(), auth_connector=False)
    admin = str(portal.issue_tokens(user_id=1, is_admin=True)["access_token"])
    bind(portal, admin, auth_connector="b24portal")
    assert record_change(portal, "ONCRMLEADUPDATE", lead(1), params={"auth_connector": "b24portal"}) == 1
    assert len(call(portal, "event.offline.get", admin, clear=0, auth_connector="b24portal")["events"]) == 1


def test_list_reads_without_changing_and_pages_by_50(portal: FakePortal, token: str) -> None:
    bind(portal, token)
    for lead_id in range(1, 53):
        record_change(portal, "ONCRMLEADUPDATE", lead(lead_id))
    call(portal, "event.offline.get", token, clear=0, limit=1)
    response = requests.post(portal.client_endpoint + "event.offline.list",
                             json={"auth": token, "filter": {"ERROR": 0}}, timeout=5).json()
    assert response["total"] == 52 and response["next"] == 50 and len(response["result"]) == 50
    assert response["result"][0]["PROCESS_ID"] != "" and response["result"][1]["PROCESS_ID"] == ""
    assert response["result"][0]["ERROR"] == "0"
    page_2 = requests.post(portal.client_endpoint + "event.offline.list",
                           json={"auth": token, "start": 50}, timeout=5).json()
    assert len(page_2["result"]) == 2
    assert len(queue(portal)) == 52


def test_the_crm_change_hook_records_with_the_callers_connector_and_user(portal: FakePortal, token: str) -> None:
    bind(portal, token, auth_connector="b24portal")
    (hook,) = portal.ext["crm_change_hooks"]
    ctx: Any = type("Ctx", (), {"user_id": 5})()
    hook(portal, "ONCRMLEADUPDATE", lead(9), {"auth_connector": "b24portal"}, ctx)
    assert queue(portal) == []
    hook(portal, "ONCRMLEADUPDATE", lead(9), {}, ctx)
    assert [r["EVENT_ADDITIONAL"] for r in queue(portal)] == [{"user_id": "5"}]
