"""Tests of the fake's CRM lead methods (tests/fakes/b24_crm.py): plain pytest on a frozen clock, no Django.

Run: ``.venv/bin/pytest tests/fakes -p no:django -q``
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from . import b24_crm, b24_placements
from .bitrix24 import FakeBitrix24Cloud, FakePortal
from .phpquery import build_php_query


@pytest.fixture
def cloud(cloud: FakeBitrix24Cloud) -> FakeBitrix24Cloud:
    b24_placements.install(cloud)
    b24_crm.install(cloud)
    return cloud


def call(portal: FakePortal, method: str, token: str, **params: Any) -> dict[str, Any]:
    return requests.post(portal.client_endpoint + method, json={"auth": token, **params}, timeout=5).json()


def add(portal: FakePortal, token: str, **fields: Any) -> int:
    return int(call(portal, "crm.lead.add", token, fields=fields)["result"])


def test_add_get_update_delete_a_lead_with_a_phone_multifield(portal: FakePortal, token: str) -> None:
    lead_id = add(portal, token, TITLE="Иван", PHONE=[{"VALUE": "+77001112233", "VALUE_TYPE": "WORK"}],
                  ORIGINATOR_ID="b24portal", ORIGIN_ID="123")
    lead = call(portal, "crm.lead.get", token, id=lead_id)["result"]
    assert lead["TITLE"] == "Иван" and lead["STATUS_ID"] == "NEW" and lead["HAS_PHONE"] == "Y"
    assert lead["PHONE"][0]["VALUE"] == "+77001112233" and lead["PHONE"][0]["VALUE_TYPE"] == "WORK"
    phone_id = lead["PHONE"][0]["ID"]
    assert call(portal, "crm.lead.update", token, id=lead_id, fields={
        "STATUS_ID": "IN_PROCESS", "PHONE": [{"ID": phone_id, "VALUE": "+77009998877"}, {"VALUE": "+77000000000"}]
    })["result"] is True
    lead = call(portal, "crm.lead.get", token, id=lead_id)["result"]
    assert lead["STATUS_ID"] == "IN_PROCESS"
    assert [p["VALUE"] for p in lead["PHONE"]] == ["+77009998877", "+77000000000"]
    assert call(portal, "crm.lead.delete", token, id=lead_id)["result"] is True
    assert call(portal, "crm.lead.get", token, id=lead_id)["error_description"] == "Not found"


def test_unknown_ids_and_statuses_are_errors(portal: FakePortal, token: str) -> None:
    for method in ("crm.lead.update", "crm.lead.delete"):
        answer = call(portal, method, token, id=99999, fields={"TITLE": "x"})
        assert answer["error_description"] == "Not found"
    answer = call(portal, "crm.lead.add", token, fields={"STATUS_ID": "NOPE"})
    assert "Status not found" in answer["error_description"]
    assert b24_crm.all_leads(portal) == []


def test_list_filters_by_origin_selects_and_pages_by_fifty(portal: FakePortal, token: str) -> None:
    portal.set_bucket(burst=1000, rate=2)  # 120 adds on a frozen clock
    for n in range(120):
        add(portal, token, TITLE=f"lead {n}", ORIGINATOR_ID="b24portal" if n % 2 else "other", ORIGIN_ID=str(n))
    page = requests.post(portal.client_endpoint + "crm.lead.list", json={
        "auth": token, "filter": {"ORIGINATOR_ID": "b24portal", "ORIGIN_ID": "7"}, "select": ["ID", "TITLE"]},
        timeout=5).json()
    assert [row["TITLE"] for row in page["result"]] == ["lead 7"] and page["total"] == 1
    assert set(page["result"][0]) == {"ID", "TITLE"}
    first = call(portal, "crm.lead.list", token, filter={"ORIGINATOR_ID": "b24portal"})
    assert len(first["result"]) == 50 and first["total"] == 60 and first["next"] == 50
    last = call(portal, "crm.lead.list", token, filter={"ORIGINATOR_ID": "b24portal"}, start=50)
    assert len(last["result"]) == 10 and "next" not in last
    newest = call(portal, "crm.lead.list", token, filter={">ID": 0}, order={"ID": "DESC"}, start=-1)
    assert "total" not in newest and int(newest["result"][0]["ID"]) > int(newest["result"][-1]["ID"])
    assert "PHONE" not in newest["result"][0]  # multi-fields only when selected


def test_the_methods_work_inside_a_batch(portal: FakePortal, token: str) -> None:
    cmd = {"a": "crm.lead.add?" + build_php_query({"fields": {"TITLE": "A", "ORIGIN_ID": "1",
                                                               "PHONE": [{"VALUE": "+1", "VALUE_TYPE": "WORK"}]}}),
           "u": "crm.lead.update?" + build_php_query({"id": "$result[a]", "fields": {"STATUS_ID": "JUNK"}}),
           "l": "crm.lead.list?" + build_php_query({"filter": {"ORIGIN_ID": "1"}, "select": ["ID", "STATUS_ID"]}),
           "bad": "crm.lead.update?" + build_php_query({"id": 5555, "fields": {"TITLE": "x"}})}
    answer = call(portal, "batch", token, cmd=cmd)["result"]
    lead_id = answer["result"]["a"]
    assert answer["result"]["u"] is True
    assert answer["result"]["l"] == [{"ID": str(lead_id), "STATUS_ID": "JUNK"}]
    assert answer["result_error"]["bad"]["error_description"] == "Not found"
    assert portal.count("batch", in_batch=False) == 1 and portal.count("crm.lead.add", in_batch=True) == 1


def test_status_list_gives_the_default_lead_stages(portal: FakePortal, token: str) -> None:
    rows = call(portal, "crm.status.list", token, filter={"ENTITY_ID": "STATUS"})["result"]
    assert [r["STATUS_ID"] for r in rows] == ["NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK"]
    assert call(portal, "crm.status.list", token, filter={"ENTITY_ID": "SOURCE"})["result"] == []
    b24_crm.set_lead_stages(portal, [("NEW", "New"), ("HOT", "Hot")])
    assert [r["STATUS_ID"] for r in call(portal, "crm.status.list", token)["result"]] == ["NEW", "HOT"]


def test_every_change_calls_the_change_hooks(portal: FakePortal, token: str) -> None:
    seen: list[tuple[str, Any, bool]] = []
    portal.ext.setdefault("crm_change_hooks", []).append(
        lambda p, event, data, params, ctx: seen.append((event, data, ctx.in_batch)))
    lead_id = add(portal, token, TITLE="A")
    call(portal, "batch", token, cmd={"u": f"crm.lead.update?id={lead_id}&fields[TITLE]=B"})
    call(portal, "crm.lead.delete", token, id=lead_id)
    call(portal, "crm.lead.update", token, id=lead_id, fields={"TITLE": "C"})  # not found: no event
    assert seen == [("ONCRMLEADADD", {"FIELDS": {"ID": lead_id}}, False),
                    ("ONCRMLEADUPDATE", {"FIELDS": {"ID": lead_id}}, True),
                    ("ONCRMLEADDELETE", {"FIELDS": {"ID": lead_id}}, False)]


def test_a_lost_answer_still_did_the_work(portal: FakePortal, token: str) -> None:
    b24_crm.lose_answers(portal, times=1, method="crm.lead.add")
    response = requests.post(portal.client_endpoint + "crm.lead.add", json={"auth": token, "fields": {"TITLE": "A"}},
                             timeout=5)
    assert response.status_code == 502 and "text/html" in response.headers["Content-Type"]
    assert len(b24_crm.all_leads(portal)) == 1
    assert "result" in call(portal, "crm.lead.add", token, fields={"TITLE": "B"})


def test_multifield_values_get_ids_and_change_or_go_by_id_while_ones_without_an_id_are_added(
        portal: FakePortal, token: str) -> None:
    lead_id = add(portal, token, PHONE=[{"VALUE": "+1", "VALUE_TYPE": "WORK"}, {"VALUE": "+2", "VALUE_TYPE": "HOME"}],
                  EMAIL=[{"VALUE": "a@example.com", "VALUE_TYPE": "WORK"}])
    lead = call(portal, "crm.lead.get", token, id=lead_id)["result"]
    first, second = lead["PHONE"]
    assert first["ID"] != second["ID"] and lead["EMAIL"][0]["ID"] not in (first["ID"], second["ID"])
    assert (second["VALUE"], second["VALUE_TYPE"], second["TYPE_ID"]) == ("+2", "HOME", "PHONE")
    call(portal, "crm.lead.update", token, id=lead_id, fields={
        "PHONE": [{"ID": first["ID"], "VALUE": "+3", "VALUE_TYPE": "WORK"}, {"ID": second["ID"], "VALUE": ""}],
        "EMAIL": [{"VALUE": "b@example.com", "VALUE_TYPE": "WORK"}]})
    lead = call(portal, "crm.lead.get", token, id=lead_id)["result"]
    assert [(p["ID"], p["VALUE"]) for p in lead["PHONE"]] == [(first["ID"], "+3")]  # changed in place, one gone
    assert [e["VALUE"] for e in lead["EMAIL"]] == ["a@example.com", "b@example.com"]  # no ID: added
    call(portal, "crm.lead.update", token, id=lead_id, fields={"PHONE": [{"ID": first["ID"], "VALUE": ""}]})
    lead = call(portal, "crm.lead.get", token, id=lead_id)["result"]
    assert lead["PHONE"] == [] and lead["HAS_PHONE"] == "N"
