"""Tests of the fake Bitrix24 cloud itself (plain pytest, no Django, no DB).

Run: ``.venv/bin/pytest tests/fakes -p no:django -q``

Every cloud here runs on a frozen :class:`Clock` (``Clock.manual()``, the ``cloud`` fixture of conftest.py):
time passes only when a test calls ``cloud.advance(...)``, so no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests

from .bitrix24 import B24Error, CallContext, FakeBitrix24Cloud, FakePortal, paginate
from .clock import Clock
from .phpquery import build_php_query, flatten_php, listify, parse_php_query


def call(portal: FakePortal, method: str, token: str | None, **params: Any) -> requests.Response:
    body = {"auth": token, **params} if token is not None else params
    return requests.post(portal.client_endpoint + method, json=body, timeout=5)


def refresh(cloud: FakeBitrix24Cloud, refresh_token: str, **overrides: str) -> requests.Response:
    params = {
        "grant_type": "refresh_token",
        "client_id": cloud.client_id,
        "client_secret": cloud.client_secret,
        "refresh_token": refresh_token,
        **overrides,
    }
    return requests.get(cloud.oauth_url, params=params, timeout=5)


# ---------------------------------------------------------------------------------------------------------
# phpquery


def test_parse_php_query_nested_and_append() -> None:
    assert parse_php_query("a[b][0]=1&c=2") == {"a": {"b": {"0": "1"}}, "c": "2"}
    assert parse_php_query("x[]=a&x[]=b&y=") == {"x": {"0": "a", "1": "b"}, "y": ""}
    assert parse_php_query("a%5Bb%5D=%20z+") == {"a": {"b": " z "}}


def test_build_php_query_roundtrip() -> None:
    data = {"fields": {"TITLE": "a&b c", "LIST": [1, 2], "ON": True, "OFF": False, "NONE": None}, "id": 5}
    encoded = build_php_query(data)
    assert "fields%5BTITLE%5D=a%26b+c" in encoded
    assert "NONE" not in encoded
    assert parse_php_query(encoded) == {
        "fields": {"TITLE": "a&b c", "LIST": {"0": "1", "1": "2"}, "ON": "1", "OFF": "0"},
        "id": "5",
    }
    assert build_php_query({"a": [1]}, encode_brackets=False) == "a[0]=1"
    assert flatten_php({"d": {"x": [{"ID": 7}]}}) == [("d[x][0][ID]", "7")]
    assert listify({"0": {"0": "a"}, "1": "b"}) == [["a"], "b"]


# ---------------------------------------------------------------------------------------------------------
# REST envelope, params, auth


def test_success_envelope_shape(portal: FakePortal, token: str) -> None:
    resp = call(portal, "app.info", token)
    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == ["result", "time"]
    assert set(body["time"]) == {
        "start",
        "finish",
        "duration",
        "processing",
        "date_start",
        "date_finish",
        "operating",
        "operating_reset_at",
    }
    assert isinstance(body["time"]["start"], float)
    assert isinstance(body["time"]["operating_reset_at"], int)
    assert body["time"]["date_start"][-6] in "+-"  # ISO 8601 with an offset
    assert body["result"] == {
        "ID": 17,
        "CODE": portal.cloud.app_code,
        "VERSION": 1,
        "STATUS": "L",
        "INSTALLED": False,
        "PAYMENT_EXPIRED": "N",
        "DAYS": None,
        "LANGUAGE_ID": "en",
        "LICENSE": "ru_pro",
        "LICENSE_TYPE": "pro",
        "LICENSE_FAMILY": "pro",
    }


def test_license_derivation(cloud: FakeBitrix24Cloud) -> None:
    p = cloud.create_portal(license="ru_ent250", enterprise=True)
    assert (p.license_type, p.license_family) == ("ent250", "ent")
    assert p.bucket == (250.0, 5.0)


def test_form_nested_keys_query_and_json_accepted(portal: FakePortal, token: str) -> None:
    seen: list[dict[str, Any]] = []

    def echo(p: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
        seen.append(params)
        return {"user": ctx.user_id, "fields": params.get("fields")}

    portal.register_method("test.echo", echo)
    form = build_php_query({"auth": token, "fields": {"NAME": "x", "PHONE": [{"VALUE": "+1"}]}})
    resp = requests.post(
        portal.base_url + "/rest/TEST.Echo.json?extra=q&fields=overridden",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json()["result"] == {"user": 1, "fields": {"NAME": "x", "PHONE": {"0": {"VALUE": "+1"}}}}
    assert seen[-1]["extra"] == "q"

    resp = requests.post(
        portal.client_endpoint + "test.echo", json={"auth": token, "fields": {"N": [1]}}, timeout=5
    )
    assert resp.json()["result"]["fields"] == {"N": [1]}

    resp = requests.get(
        portal.client_endpoint + "test.echo", params={"auth": token, "fields[A]": "1"}, timeout=5
    )
    assert resp.json()["result"]["fields"] == {"A": "1"}

    resp = requests.post(
        portal.client_endpoint + "test.echo",
        files={"auth": (None, token), "fields[M]": (None, "v")},
        timeout=5,
    )
    assert resp.json()["result"]["fields"] == {"M": "v"}

    record = portal.calls("test.echo")[0]
    assert (record.token, record.http_status, record.error, record.in_batch) == (token, 200, None, False)
    assert portal.count("test.echo") == 4


def test_auth_errors(cloud: FakeBitrix24Cloud, portal: FakePortal, token: str) -> None:
    other = cloud.create_portal()
    other_token = other.issue_tokens()["access_token"]
    for bad in ("nope", other_token, None):
        resp = call(portal, "app.info", bad)
        assert resp.status_code == 401
        assert resp.json() == {"error": "NO_AUTH_FOUND", "error_description": "Wrong authorization data"}
    portal.expire_access_tokens()
    resp = call(portal, "app.info", token)
    assert resp.status_code == 401
    assert resp.json() == {
        "error": "expired_token",
        "error_description": "The access token provided has expired.",
    }
    assert portal.calls("app.info")[-1].error == "expired_token"


def test_token_expiry_by_clock(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    tok = portal.issue_tokens(expires_in=60)["access_token"]
    assert call(portal, "user.current", tok).status_code == 200
    cloud.advance(61)
    assert call(portal, "user.current", tok).json()["error"] == "expired_token"


def test_unknown_method_and_injection(portal: FakePortal, token: str) -> None:
    resp = call(portal, "no.such.method", token)
    assert resp.status_code == 404
    assert resp.json() == {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    portal.fail_next("app.info", "INTERNAL_SERVER_ERROR", "Internal server error", 500, times=2)
    assert [call(portal, "app.info", token).status_code for _ in range(3)] == [500, 500, 200]

    def admin_only(p: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
        ctx.require_admin()
        raise B24Error("ERROR_ARGUMENT", "bad", 400, argument="PLACEMENT")

    portal.register_method("x.admin", admin_only)
    user_token = portal.issue_tokens(user_id=5, is_admin=False)["access_token"]
    assert call(portal, "x.admin", user_token).status_code == 403
    assert call(portal, "x.admin", token).json() == {
        "error": "ERROR_ARGUMENT",
        "error_description": "bad",
        "argument": "PLACEMENT",
    }


def test_system_methods(portal: FakePortal, token: str) -> None:
    portal.add_user(7, name="Ann", last_name="Lee", email="ann@example.com")
    user_token = portal.issue_tokens(user_id=7, is_admin=False)["access_token"]
    assert call(portal, "user.current", user_token).json()["result"] == {
        "ID": "7",
        "NAME": "Ann",
        "LAST_NAME": "Lee",
        "EMAIL": "ann@example.com",
    }
    assert call(portal, "user.admin", user_token).json()["result"] is False
    assert call(portal, "user.admin", token).json()["result"] is True
    assert call(portal, "scope", token).json()["result"] == portal.scopes
    assert "task" in call(portal, "scope", token, full=True).json()["result"]
    assert call(portal, "method.get", token, name="app.info").json()["result"] == {
        "isExisting": True,
        "isAvailable": True,
    }
    portal.unavailable_methods.add("event.bind")
    assert call(portal, "method.get", token, name="event.bind").json()["result"] == {
        "isExisting": True,
        "isAvailable": False,
    }
    assert call(portal, "method.get", token, name="").json()["result"] == {
        "isExisting": False,
        "isAvailable": False,
    }
    assert call(portal, "method.get", token, name="x.y").json()["result"]["isExisting"] is False
    portal.features["rest_offline_extended"] = "Y"
    assert call(portal, "feature.get", token, CODE="rest_offline_extended").json()["result"] == {"value": "Y"}
    assert call(portal, "feature.get", token, CODE="other").json()["result"] == {"value": "N"}
    resp = call(portal, "feature.get", token)
    assert (resp.status_code, resp.json()["error"]) == (400, "CODE_EMPTY")
    assert isinstance(call(portal, "server.time", token).json()["result"], str)


def test_event_bind_unbind_get(portal: FakePortal, token: str) -> None:
    handler = "https://app.example.com/events/"
    assert call(portal, "event.bind", token, event="onCrmDealAdd", handler=handler).json()["result"] is True
    dup = call(portal, "event.bind", token, event="ONCRMDEALADD", handler=handler)
    assert dup.status_code == 400
    assert dup.json() == {
        "error": "ERROR_HANDLER_ALREADY_EXIST",
        "error_description": "Handler already binded",
    }
    assert (
        call(portal, "event.bind", token, event="BOGUS", handler=handler).json()["error"]
        == "ERROR_EVENT_NOT_FOUND"
    )
    user_token = portal.issue_tokens(user_id=3, is_admin=False)["access_token"]
    denied = call(portal, "event.bind", user_token, event="ONCRMDEALUPDATE", event_type="offline")
    assert denied.status_code == 403
    assert call(portal, "event.bind", token, event="ONCRMDEALUPDATE", event_type="offline").status_code == 200
    assert call(portal, "event.get", token).json()["result"] == [
        {"event": "ONCRMDEALADD", "handler": handler, "auth_type": "0", "offline": 0},
        {"event": "ONCRMDEALUPDATE", "handler": "", "auth_type": "0", "offline": 1},
    ]
    assert call(portal, "event.get", user_token).json()["result"] == []
    assert call(portal, "event.unbind", token, event="ONCRMDEALADD", handler=handler).json()["result"] == {
        "count": 1
    }
    assert call(portal, "event.unbind", token, event="ONCRMDEALADD", handler=handler).json()["result"] == {
        "count": 0
    }
    assert portal.count("event.bind") == 5
    assert portal.count("event.bind", status=200) == 2


def test_paginate_helper() -> None:
    page = paginate(range(120), {"start": "50"})
    assert (page.items[0], page.total, page.next) == (50, 120, 100)
    assert paginate(range(120), {"start": 100}).next is None
    fast = paginate(range(120), {"start": -1})
    assert (len(fast.items), fast.total, fast.next) == (50, None, None)


def test_paged_result_envelope(portal: FakePortal, token: str) -> None:
    portal.register_method("x.list", lambda p, params, ctx: paginate(range(60), params))
    body = call(portal, "x.list", token).json()
    assert (body["total"], body["next"], len(body["result"])) == (60, 50, 50)
    assert list(body) == ["result", "next", "total", "time"]


# ---------------------------------------------------------------------------------------------------------
# OAuth


def test_refresh_rotation(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    first = portal.issue_tokens(user_id=1)
    resp = refresh(cloud, first["refresh_token"])
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert list(body) == [
        "access_token",
        "refresh_token",
        "expires",
        "expires_in",
        "scope",
        "domain",
        "server_endpoint",
        "status",
        "client_endpoint",
        "member_id",
        "user_id",
    ]
    assert body["domain"] == "oauth.bitrix.info"
    assert body["client_endpoint"] == portal.client_endpoint
    assert body["server_endpoint"] == cloud.server_endpoint
    assert (body["member_id"], body["user_id"], body["expires_in"], body["scope"]) == (
        portal.member_id,
        1,
        3600,
        "crm,placement,messageservice,user",
    )
    assert body["refresh_token"] != first["refresh_token"]
    # the old refresh token is now used up; the old access token still works until it expires
    reuse = refresh(cloud, first["refresh_token"])
    assert reuse.status_code == 400
    assert reuse.json() == {"error": "invalid_grant", "error_description": "Invalid grant"}
    assert call(portal, "app.info", first["access_token"]).status_code == 200
    assert call(portal, "app.info", body["access_token"]).status_code == 200
    assert refresh(cloud, body["refresh_token"]).status_code == 200
    assert cloud.oauth_calls == 3
    assert cloud.oauth_count("refresh_token", status=400) == 1


def test_oauth_errors(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    rt = portal.issue_tokens()["refresh_token"]
    bad_client = refresh(cloud, rt, client_secret="wrong")
    assert (bad_client.status_code, bad_client.json()["error"]) == (401, "invalid_client")
    portal.payment_required = True
    paid = refresh(cloud, rt)
    assert paid.json() == {"error": "PAYMENT_REQUIRED", "error_description": "Payment required"}
    portal.payment_required = False
    cloud.oauth_down = True
    down = refresh(cloud, rt)
    assert down.status_code == 502
    assert down.headers["Content-Type"].startswith("text/html")
    cloud.oauth_down = False
    portal.uninstall()
    assert refresh(cloud, rt).json()["error"] == "invalid_grant"
    assert [r.http_status for r in cloud.oauth_requests] == [401, 402, 502, 400]


def test_authorization_code_and_server_app_info(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    code = portal.issue_auth_code(user_id=1)
    params = {
        "grant_type": "authorization_code",
        "client_id": cloud.client_id,
        "client_secret": cloud.client_secret,
        "code": code,
    }
    body = requests.get(cloud.oauth_url, params=params, timeout=5).json()
    assert "expires" not in body and "user_id" not in body
    assert body["member_id"] == portal.member_id
    assert requests.get(cloud.oauth_url, params=params, timeout=5).json()["error"] == "invalid_grant"
    late = portal.issue_auth_code()
    cloud.advance(31)
    assert (
        requests.get(cloud.oauth_url, params={**params, "code": late}, timeout=5).json()["error"]
        == "invalid_grant"
    )

    tok = portal.issue_tokens()["access_token"]
    info = requests.post(cloud.server_endpoint + "app.info", data={"auth": tok}, timeout=5)
    assert info.json()["result"] == portal.app_info()
    assert (
        requests.get(cloud.server_endpoint + "app.info", params={"auth": "x"}, timeout=5).status_code == 401
    )


def test_revoke_tokens(portal: FakePortal, cloud: FakeBitrix24Cloud) -> None:
    tokens = portal.issue_tokens()
    portal.revoke_tokens()
    assert call(portal, "app.info", tokens["access_token"]).json()["error"] == "NO_AUTH_FOUND"
    assert refresh(cloud, tokens["refresh_token"]).json()["error"] == "invalid_grant"


# ---------------------------------------------------------------------------------------------------------
# batch


def test_batch_partial_failure_refs_and_empty_parts(portal: FakePortal, token: str) -> None:
    portal.register_method("x.list", lambda p, params, ctx: paginate([{"ID": "41"}, {"ID": "42"}], params))
    portal.register_method("x.echo", lambda p, params, ctx: params)
    cmd = {
        "me": "user.current",
        "items": "x.list",
        "bad": "no.such",
        "ref": "x.echo?"
        + build_php_query(
            {
                "uid": "$result[me][ID]",
                "first": "$result[items][0][ID]",
                "text": "u=$result[me][ID]!",
                "all": "$result[items]",
            }
        ),
    }
    resp = requests.post(portal.client_endpoint + "batch", json={"auth": token, "cmd": cmd}, timeout=5)
    assert resp.status_code == 200
    body = resp.json()
    assert list(body) == ["result", "time"]
    inner = body["result"]
    assert list(inner) == ["result", "result_error", "result_total", "result_next", "result_time"]
    assert inner["result"]["me"]["ID"] == "1"
    assert inner["result"]["ref"] == {
        "uid": "1",
        "first": "41",
        "text": "u=1!",
        "all": [{"ID": "41"}, {"ID": "42"}],
    }
    assert inner["result_error"] == {
        "bad": {"error": "ERROR_METHOD_NOT_FOUND", "error_description": "Method not found!"}
    }
    assert inner["result_total"] == {"items": 2}
    assert inner["result_next"] == []  # empty parts are [] not {}
    assert set(inner["result_time"]) == {"me", "items", "ref"}
    assert portal.count("user.current", in_batch=True) == 1
    assert portal.count("batch") == 1


def test_batch_halt_form_encoded_and_all_empty(portal: FakePortal, token: str) -> None:
    form = build_php_query({"auth": token, "halt": 1, "cmd": {"a": "no.such", "b": "app.info"}})
    resp = requests.post(
        portal.client_endpoint + "batch",
        data=form,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=5,
    )
    inner = resp.json()["result"]
    assert inner["result"] == [] and inner["result_time"] == [] and list(inner["result_error"]) == ["a"]
    assert portal.count("app.info") == 0
    empty = requests.post(portal.client_endpoint + "batch", json={"auth": token, "cmd": {}}, timeout=5).json()
    assert empty["result"] == {
        "result": [],
        "result_error": [],
        "result_total": [],
        "result_next": [],
        "result_time": [],
    }


def test_batch_limits(portal: FakePortal, token: str) -> None:
    cmd = {f"c{i}": "server.time" for i in range(51)}
    resp = requests.post(portal.client_endpoint + "batch", json={"auth": token, "cmd": cmd}, timeout=5)
    assert resp.status_code == 400
    assert resp.json() == {
        "error": "ERROR_BATCH_LENGTH_EXCEEDED",
        "error_description": "Max batch length exceeded",
    }
    del cmd["c50"]
    assert (
        len(
            requests.post(
                portal.client_endpoint + "batch", json={"auth": token, "cmd": cmd}, timeout=5
            ).json()["result"]["result"]
        )
        == 50
    )
    nested = requests.post(
        portal.client_endpoint + "batch",
        json={"auth": token, "cmd": {"n": "batch?cmd[x]=app.info"}},
        timeout=5,
    ).json()
    assert nested["result"]["result_error"]["n"]["error"] == "ERROR_BATCH_METHOD_NOT_ALLOWED"


# ---------------------------------------------------------------------------------------------------------
# limits


def test_leaky_bucket_503_and_recovery(cloud: FakeBitrix24Cloud, portal: FakePortal, token: str) -> None:
    assert portal.bucket == (50.0, 2.0)
    portal.set_bucket(3, 20)
    cmd = {f"c{i}": "server.time" for i in range(10)}
    statuses = [
        requests.post(
            portal.client_endpoint + "batch", json={"auth": token, "cmd": cmd}, timeout=5
        ).status_code
        for _ in range(3)
    ]  # a batch costs one request
    statuses.append(call(portal, "app.info", token).status_code)
    assert statuses == [200, 200, 200, 503]
    rejected = call(portal, "app.info", token)
    assert rejected.json() == {"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}
    assert portal.rejected_503 == 2
    assert portal.count("app.info", status=503) == 2
    cloud.advance(0.1)  # drains 2 at 20/s
    assert [call(portal, "app.info", token).status_code for _ in range(3)] == [200, 200, 503]
    portal.set_bucket(1, 50)
    assert call(portal, "app.info", token).status_code == 200
    assert call(portal, "app.info", token).status_code == 503
    cloud.advance(0.01)  # half a permit: still full
    assert call(portal, "app.info", token).status_code == 503
    cloud.advance(0.01)
    assert call(portal, "app.info", token).status_code == 200
    assert portal.bucket_level == 1.0


def test_operating_limit_blocks_one_method(cloud: FakeBitrix24Cloud, portal: FakePortal, token: str) -> None:
    portal.set_cost("app.info", 300)
    first = call(portal, "app.info", token).json()["time"]
    assert first["operating"] == 300
    assert first["operating_reset_at"] > cloud.now()
    assert call(portal, "app.info", token).status_code == 200  # 600 > 480 now, but this call was allowed
    blocked = call(portal, "app.info", token)
    assert blocked.status_code == 429
    assert blocked.json() == {
        "error": "OPERATION_TIME_LIMIT",
        "error_description": "Method is blocked due to operation time limit.",
    }
    assert call(portal, "user.current", token).status_code == 200
    # batch sub-calls count against their own methods
    body = requests.post(
        portal.client_endpoint + "batch",
        json={"auth": token, "cmd": {"a": "app.info", "u": "user.current"}},
        timeout=5,
    ).json()
    assert body["result"]["result_error"]["a"]["error"] == "OPERATION_TIME_LIMIT"
    assert body["result"]["result_time"]["u"]["operating"] == pytest.approx(0.02)
    cloud.advance(11 * 60)  # the window slides out
    assert call(portal, "app.info", token).status_code == 200


# ---------------------------------------------------------------------------------------------------------
# moved portal


def test_move_domain_302(portal: FakePortal, token: str) -> None:
    old_base = portal.base_url
    moved = portal.move_domain()
    assert moved is portal and portal.base_url != old_base
    resp = requests.post(
        old_base + "/rest/app.info.json", json={"auth": token}, allow_redirects=False, timeout=5
    )
    assert resp.status_code == 302
    assert resp.headers["Location"] == portal.base_url + "/rest/app.info.json"
    again = requests.post(resp.headers["Location"], json={"auth": token}, timeout=5)
    assert again.status_code == 200
    assert portal.count("app.info", status=302) == 1
    assert portal.install_frame()[0]["DOMAIN"] == portal.domain
    assert portal.issue_tokens()["client_endpoint"] == portal.client_endpoint


# ---------------------------------------------------------------------------------------------------------
# payload builders


def test_install_and_placement_frames(portal: FakePortal) -> None:
    query, form = portal.install_frame(user_id=1)
    assert list(query) == ["DOMAIN", "PROTOCOL", "LANG", "APP_SID"]
    assert query["DOMAIN"] == portal.domain and query["PROTOCOL"] == "0"
    assert list(form) == [
        "AUTH_ID",
        "AUTH_EXPIRES",
        "REFRESH_ID",
        "SERVER_ENDPOINT",
        "APPLICATION_TOKEN",
        "APPLICATION_SCOPE",
        "member_id",
        "status",
        "PLACEMENT",
    ]
    assert form["APPLICATION_TOKEN"] == portal.application_token and form["PLACEMENT"] == "DEFAULT"
    assert call(portal, "app.info", form["AUTH_ID"]).status_code == 200
    _, old = portal.install_frame(with_new_fields=False)
    assert list(old) == ["AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "member_id", "status"]

    _, widget = portal.placement_frame("CRM_DEAL_LIST_MENU", {"ID": "8061", "URI": "/crm/deal/list/"})
    assert widget["PLACEMENT"] == "CRM_DEAL_LIST_MENU"
    assert widget["PLACEMENT_OPTIONS"] == '{"ID":"8061","URI":"\\/crm\\/deal\\/list\\/"}'
    assert json.loads(widget["PLACEMENT_OPTIONS"]) == {"ID": "8061", "URI": "/crm/deal/list/"}


def test_event_payloads(portal: FakePortal) -> None:
    full = portal.event_payload("onCrmDealAdd", {"FIELDS": {"ID": 7405}})
    assert full["event"] == "ONCRMDEALADD" and full["data[FIELDS][ID]"] == "7405" and full["ts"].isdigit()
    assert [k for k in full if k.startswith("auth[")] == [
        f"auth[{k}]"
        for k in (
            "access_token",
            "expires_in",
            "scope",
            "domain",
            "server_endpoint",
            "status",
            "client_endpoint",
            "member_id",
            "refresh_token",
            "application_token",
        )
    ]
    bare = portal.event_payload("ONCRMDEALADD", {}, with_tokens=False)
    assert sorted(k for k in bare if k.startswith("auth[")) == sorted(
        f"auth[{k}]"
        for k in (
            "domain",
            "server_endpoint",
            "client_endpoint",
            "member_id",
            "application_token",
            "status",
            "scope",
        )
    )

    install = portal.onappinstall()
    assert install["data[VERSION]"] == "1" and install["auth[refresh_token]"]
    old_app_token = portal.application_token
    update = portal.onappupdate()
    assert portal.application_token != old_app_token
    assert update["auth[application_token]"] == portal.application_token
    assert (update["data[VERSION]"], update["data[PREVIOUS_VERSION]"]) == ("2", "1")
    payment = portal.onapppayment(status="P", payment_expired="Y", days=-3)
    assert "auth[application_token]" not in payment and payment["data[DAYS]"] == "-3"
    assert portal.app_info()["PAYMENT_EXPIRED"] == "Y"
    token_before = payment["auth[access_token]"]
    uninstall = portal.onappuninstall(clean=False)
    assert uninstall["data[CLEAN]"] == "0"
    assert sorted(k for k in uninstall if k.startswith("auth[")) == sorted(
        f"auth[{k}]"
        for k in ("domain", "server_endpoint", "client_endpoint", "member_id", "application_token")
    )
    assert call(portal, "app.info", token_before).json()["error"] == "NO_AUTH_FOUND"


def test_finish_install_and_deliver_event(portal: FakePortal, token: str) -> None:
    received: list[dict[str, Any]] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers["Content-Length"])
            received.append(parse_php_query(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        handler = f"http://127.0.0.1:{server.server_address[1]}/events/"
        assert call(portal, "event.bind", token, event="ONCRMDEALADD", handler=handler).status_code == 200
        assert portal.deliver_event("ONCRMDEALADD", {"FIELDS": {"ID": 1}}) == []  # not installed yet
        portal.finish_install()
        assert call(portal, "app.info", token).json()["result"]["INSTALLED"] is True
        assert portal.deliver_event("ONCRMDEALADD", {"FIELDS": {"ID": 1}}) == [(handler, 200)]
        assert received[0]["data"] == {"FIELDS": {"ID": "1"}}
        assert received[0]["auth"]["application_token"] == portal.application_token
    finally:
        server.shutdown()
        server.server_close()


def test_latency_and_concurrency(portal: FakePortal, token: str, cloud: FakeBitrix24Cloud) -> None:
    portal.set_latency("server.time", 0.2)
    results: list[int] = []

    def worker() -> None:
        results.append(call(portal, "server.time", token).status_code)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    # all five wait out their latency at the same time: it is not served under the lock ...
    assert cloud.clock.wait_for_sleepers(5)
    assert call(portal, "app.info", token).status_code == 200  # ... and other calls are not held up
    assert results == []  # on a frozen clock nobody answers before time moves
    cloud.advance(0.2)
    for t in threads:
        t.join(timeout=10)
    assert results == [200] * 5
    assert [r.http_status for r in portal.calls("server.time")] == [200] * 5


def test_oauth_latency_on_the_clock(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    rt = portal.issue_tokens()["refresh_token"]
    cloud.set_oauth_latency(1.0)
    answers: list[int] = []
    worker = threading.Thread(target=lambda: answers.append(refresh(cloud, rt).status_code))
    worker.start()
    assert cloud.clock.wait_for_sleepers(1)
    assert answers == []
    cloud.advance(1.0)
    worker.join(timeout=10)
    assert answers == [200]
    cloud.set_oauth_latency(0.0)


# ---------------------------------------------------------------------------------------------------------
# the clock


def test_manual_clock_stands_still_until_advanced() -> None:
    clock = Clock.manual(start=1_700_000_000)
    assert clock.frozen and clock.now() == 1_700_000_000.0 and isinstance(clock.now(), float)
    assert clock.now() == clock.now()
    assert clock.advance(2.5) == 1_700_000_002.5 == clock.now()
    with pytest.raises(ValueError):
        clock.advance(-1)
    clock.sleep(0)  # nothing to wait for
    stuck = Clock.manual(sleep_timeout=0.05)
    with pytest.raises(TimeoutError):
        stuck.sleep(1)  # nobody advances it: fail, do not hang
    assert stuck.sleepers == 0


def test_running_clock_follows_real_time_and_can_freeze() -> None:
    clock = Clock()
    before = time.time()
    reading = clock.now()
    assert before <= reading <= time.time()
    assert not clock.frozen
    clock.advance(100)
    assert clock.now() >= before + 100
    frozen_at = clock.freeze()
    assert clock.frozen and clock.now() == frozen_at == clock.now()
    clock.advance(1)
    assert clock.now() == frozen_at + 1
    resumed = clock.unfreeze()
    assert resumed >= frozen_at + 1 and clock.now() >= resumed  # no jump back
    # time passes by itself (polled: no bound on how fast)
    deadline = time.monotonic() + 10
    while clock.now() <= resumed and time.monotonic() < deadline:
        pass
    assert clock.now() > resumed


def test_clock_sleep_wakes_on_advance_in_both_modes() -> None:
    for clock in (Clock.manual(), Clock()):
        done: list[bool] = []

        def nap(c: Clock = clock, out: list[bool] = done) -> None:
            c.sleep(3600)
            out.append(True)

        sleeper = threading.Thread(target=nap)
        sleeper.start()
        assert clock.wait_for_sleepers(1)
        assert done == []
        clock.advance(1800)
        assert done == [] and clock.sleepers == 1  # half way: still asleep
        clock.advance(1800)
        sleeper.join(timeout=10)
        assert done == [True] and clock.sleepers == 0


def test_default_cloud_runs_in_real_time() -> None:
    # live-server, browser and benchmark tests use the default: buckets drain with real time
    with FakeBitrix24Cloud() as live:
        assert not live.clock.frozen
        portal = live.create_portal()
        token = portal.issue_tokens()["access_token"]
        portal.set_bucket(5, 1000)
        assert call(portal, "app.info", token).status_code == 200
        deadline = time.monotonic() + 10
        while portal.bucket_level > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert portal.bucket_level == 0
        assert live.server_errors == []


def test_frozen_cloud_still_issues_tokens_with_expiry(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    # the service computes expiry from expires_in with its own (real) clock; the fake's `expires` stays
    # consistent with its own clock, and a token lives exactly ttl seconds of fake time
    tokens = portal.issue_tokens()
    assert tokens["expires_in"] == 3600
    assert tokens["expires"] == int(cloud.now()) + 3600
    cloud.advance(3598)
    assert call(portal, "user.current", tokens["access_token"]).status_code == 200
    cloud.advance(2)
    assert call(portal, "user.current", tokens["access_token"]).json()["error"] == "expired_token"


# ---------------------------------------------------------------------------------------------------------
# trust: OAuth refresh, app.info of the token's app, admins, forged lifecycle events, budget


def test_refresh_answer_carries_identity_and_rotates(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    portal.app_status = "T"
    portal.add_user(4, is_admin=False)
    first = portal.issue_tokens(user_id=4)
    body = refresh(cloud, first["refresh_token"]).json()
    assert body["member_id"] == portal.member_id
    assert body["client_endpoint"] == portal.client_endpoint
    assert body["server_endpoint"] == cloud.server_endpoint
    assert body["domain"] == "oauth.bitrix.info"
    assert (body["status"], body["user_id"], body["scope"]) == ("T", 4, ",".join(portal.scopes))
    assert body["expires"] == int(cloud.now()) + 3600
    assert {body["access_token"], body["refresh_token"]}.isdisjoint(
        {first["access_token"], first["refresh_token"]}
    )
    assert call(portal, "user.admin", body["access_token"]).json()["result"] is False
    assert call(portal, "user.current", body["access_token"]).json()["result"]["ID"] == "4"
    assert cloud.oauth_requests[-1].member_id == portal.member_id


def test_refresh_token_lives_180_days(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    old, young = portal.issue_tokens()["refresh_token"], None
    cloud.advance(179 * 86400)
    young = portal.issue_tokens()["refresh_token"]
    cloud.advance(86400)
    assert refresh(cloud, old).json() == {"error": "invalid_grant", "error_description": "Invalid grant"}
    assert refresh(cloud, young).status_code == 200


def test_app_info_names_the_application_of_the_token(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    portal.version, portal.app_status = 3, "P"
    portal.finish_install()
    ours = portal.issue_tokens()
    theirs = portal.issue_tokens(user_id=1, app_code="other.app")
    portal.other_app("other.app", version=7, status="F")
    for endpoint in (cloud.server_endpoint, portal.client_endpoint):
        info = requests.post(endpoint + "app.info", data={"auth": ours["access_token"]}, timeout=5).json()
        assert {k: info["result"][k] for k in ("CODE", "VERSION", "STATUS", "INSTALLED", "LICENSE")} == {
            "CODE": cloud.client_id,
            "VERSION": 3,
            "STATUS": "P",
            "INSTALLED": True,
            "LICENSE": "ru_pro",
        }
        other = requests.post(endpoint + "app.info", data={"auth": theirs["access_token"]}, timeout=5).json()
        assert other["result"]["CODE"] == "other.app" != cloud.client_id
        assert (other["result"]["VERSION"], other["result"]["STATUS"]) == (7, "F")
        assert other["result"]["ID"] != info["result"]["ID"]
        assert set(other["result"]) == set(info["result"])
    assert [r.kind for r in cloud.oauth_requests] == ["rest:app.info", "rest:app.info"]
    # another app's token is a valid token of this portal (same member_id, same bucket) ...
    assert theirs["member_id"] == portal.member_id
    assert call(portal, "user.admin", theirs["access_token"]).json()["result"] is True
    # ... but only that app's client credentials refresh it
    stolen = refresh(cloud, theirs["refresh_token"])
    assert (stolen.status_code, stolen.json()["error"]) == (400, "invalid_grant")
    other_app = cloud.add_app("other.app")
    theirs_refreshed = refresh(
        cloud,
        theirs["refresh_token"],
        client_id=other_app.client_id,
        client_secret=other_app.client_secret,
    )
    assert theirs_refreshed.status_code == 200
    assert portal.app_info(None)["CODE"] == cloud.client_id
    bogus = refresh(cloud, ours["refresh_token"], client_id="other.app", client_secret="nope")
    assert bogus.json()["error"] == "invalid_client"
    # uninstalling OUR app revokes our tokens only
    portal.uninstall()
    assert call(portal, "app.info", ours["access_token"]).json()["error"] == "NO_AUTH_FOUND"
    fresh = theirs_refreshed.json()["access_token"]
    assert call(portal, "app.info", fresh).json()["result"]["CODE"] == "other.app"


def test_user_admin_per_user_and_demotion(portal: FakePortal, token: str) -> None:
    portal.add_user(5, name="Eve", is_admin=False)
    eve = portal.issue_tokens(user_id=5)["access_token"]  # is_admin omitted: a known user keeps the flag
    assert call(portal, "user.admin", eve).json()["result"] is False
    assert call(portal, "user.current", eve).json()["result"]["ID"] == "5"
    assert call(portal, "user.admin", token).json()["result"] is True
    assert call(portal, "user.current", token).json()["result"]["ID"] == "1"
    portal.set_admin(1, False)  # demoted: the same, still valid token now says false
    assert call(portal, "user.admin", token).json()["result"] is False
    _, form = portal.install_frame(user_id=1)  # a later frame does not promote the user back
    assert call(portal, "user.admin", form["AUTH_ID"]).json()["result"] is False
    portal.set_admin(5, True)
    assert call(portal, "user.admin", eve).json()["result"] is True
    # a new user id without is_admin is an admin (the builders' historical default)
    assert call(portal, "user.admin", portal.issue_tokens(user_id=8)["access_token"]).json()["result"] is True


def test_non_admin_and_other_app_install_frames(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    query, form = portal.install_frame(user_id=9, is_admin=False)
    assert query["DOMAIN"] == portal.domain and form["member_id"] == portal.member_id
    assert form["APPLICATION_TOKEN"] == portal.application_token
    assert call(portal, "user.admin", form["AUTH_ID"]).json()["result"] is False
    assert call(portal, "user.current", form["AUTH_ID"]).json()["result"]["ID"] == "9"
    assert refresh(cloud, form["REFRESH_ID"]).json()["user_id"] == 9
    _, chosen = portal.install_frame(user_id=9, application_token="attacker-chosen")
    assert chosen["APPLICATION_TOKEN"] == "attacker-chosen" != portal.application_token
    _, widget = portal.placement_frame("CRM_DEAL_LIST_MENU", {"ID": "1"}, user_id=9, is_admin=False)
    assert call(portal, "user.admin", widget["AUTH_ID"]).json()["result"] is False
    _, foreign = portal.install_frame(app_code="other.app")
    assert foreign["APPLICATION_TOKEN"] == portal.other_app("other.app").application_token
    assert foreign["APPLICATION_TOKEN"] != portal.application_token
    info = requests.get(cloud.server_endpoint + "app.info", params={"auth": foreign["AUTH_ID"]}, timeout=5)
    assert info.json()["result"]["CODE"] == "other.app"


def test_onappupdate_with_chosen_token_and_version(portal: FakePortal, cloud: FakeBitrix24Cloud) -> None:
    portal.version = 2
    genuine = portal.onappupdate(new_version=3, application_token="token-v3")
    assert (genuine["data[VERSION]"], genuine["data[PREVIOUS_VERSION]"]) == ("3", "2")
    assert genuine["auth[application_token]"] == "token-v3" == portal.application_token
    assert portal.app_info()["VERSION"] == 3
    assert call(portal, "user.admin", genuine["auth[access_token]"]).json()["result"] is True

    forged = portal.onappupdate(new_version=9, user_id=6, is_admin=False, application_token="evil", apply=False)
    assert (forged["data[VERSION]"], forged["data[PREVIOUS_VERSION]"]) == ("9", "3")
    assert forged["auth[application_token]"] == "evil"
    assert (portal.version, portal.application_token) == (3, "token-v3")  # nothing changed
    info = requests.post(
        cloud.server_endpoint + "app.info", data={"auth": forged["auth[access_token]"]}, timeout=5
    ).json()["result"]
    assert info["VERSION"] == 3 and info["CODE"] == cloud.client_id  # VERSION does not match the event
    assert call(portal, "user.admin", forged["auth[access_token]"]).json()["result"] is False
    assert forged["auth[member_id]"] == portal.member_id and forged["auth[refresh_token]"]

    replay = portal.onappupdate(new_version=3, previous_version=2, apply=False)
    assert (replay["data[VERSION]"], replay["data[PREVIOUS_VERSION]"]) == ("3", "2")


def test_onappuninstall_forged_and_genuine(portal: FakePortal, token: str) -> None:
    forged = portal.onappuninstall(clean=True, application_token="evil", apply=False)
    assert (forged["data[CLEAN]"], forged["auth[application_token]"]) == ("1", "evil")
    assert not portal.uninstalled
    assert call(portal, "app.info", token).status_code == 200  # the app is still there
    own_token = portal.application_token
    genuine = portal.onappuninstall(clean=False)
    assert (genuine["data[CLEAN]"], genuine["auth[application_token]"]) == ("0", own_token)
    assert "auth[access_token]" not in genuine
    assert portal.uninstalled
    assert call(portal, "app.info", token).json()["error"] == "NO_AUTH_FOUND"


def test_bogus_tokens_are_counted_and_cost_a_permit(cloud: FakeBitrix24Cloud, portal: FakePortal) -> None:
    token = portal.issue_tokens()["access_token"]
    expired = portal.issue_tokens(expires_in=1)["access_token"]
    stranger = cloud.create_portal().issue_tokens()["access_token"]
    cloud.advance(1)
    portal.set_bucket(6, 1)  # 6 permits, one back per second of fake time
    bad = [
        call(portal, "app.info", "made-up-0"),
        call(portal, "user.admin", "made-up-1"),
        call(portal, "app.info", None),
        call(portal, "app.info", expired),
        call(portal, "app.info", stranger),
        requests.post(portal.base_url + "/rest/1/webhookcode/app.info", json={}, timeout=5),
    ]
    assert [r.status_code for r in bad] == [401] * 6
    assert [r.json()["error"] for r in bad] == (["NO_AUTH_FOUND"] * 3 + ["expired_token"] + ["NO_AUTH_FOUND"]
                                                + ["INVALID_CREDENTIALS"])  # an unknown incoming webhook
    # every one of them reached the portal and is on record ...
    assert portal.count() == 6 == portal.count(in_batch=False)
    assert portal.count(error="NO_AUTH_FOUND") == 4 and portal.count(error="expired_token") == 1
    assert portal.count(error="INVALID_CREDENTIALS") == 1
    assert portal.count("app.info", token="made-up-0") == 1 and portal.count("user.admin") == 1
    assert portal.count(status=200) == 0
    assert all(r.user_id is None for r in portal.requests)
    # ... and spent the portal's budget: the real token is refused now
    assert portal.bucket_level == 6
    refused = call(portal, "app.info", token)
    assert refused.status_code == 503 and refused.json()["error"] == "QUERY_LIMIT_EXCEEDED"
    assert portal.rejected_503 == 1 and portal.count(token=token) == 1
    cloud.advance(1)
    assert call(portal, "app.info", token).status_code == 200
    assert portal.count() == 8 and portal.count(status=200) == 1
    # the trusted server endpoint is the auth server, not the portal: it spends no portal permit
    level = portal.bucket_level
    requests.post(cloud.server_endpoint + "app.info", data={"auth": "made-up"}, timeout=5)
    assert portal.bucket_level == level and portal.count() == 8
    assert cloud.oauth_requests[-1].error == "NO_AUTH_FOUND"
