"""Mounted fakes: another server (the sandbox's Django views) answers for the fake by calling ``dispatch`` /
``handle``; the same emulation then answers as its own server would, with no socket of its own."""

from __future__ import annotations

import json

from tests.fakes import b24_messageservice
from tests.fakes.bitrix24 import FakeBitrix24Cloud, build_php_query
from tests.fakes.carriers import FakeSmsRu
from tests.fakes.clock import Clock


def test_a_mounted_cloud_issues_and_rotates_tokens_through_dispatch():
    cloud = FakeBitrix24Cloud(client_id="local.a.b", client_secret="s", clock=Clock.manual(),
                              mount="http://127.0.0.1:8000/sandbox")
    portal = cloud.create_portal(mount="http://127.0.0.1:8000")
    assert cloud.oauth_url == "http://127.0.0.1:8000/sandbox/oauth/token/"
    assert cloud.server_endpoint == "http://127.0.0.1:8000/sandbox/rest/"
    assert portal.domain == "127.0.0.1:8000" and portal.client_endpoint == "http://127.0.0.1:8000/rest/"
    tokens = portal.issue_tokens()

    answer = cloud.dispatch("GET", "/oauth/token/", build_php_query({
        "grant_type": "refresh_token", "client_id": "local.a.b", "client_secret": "s",
        "refresh_token": tokens["refresh_token"]}))
    again = cloud.dispatch("GET", "/oauth/token/", build_php_query({
        "grant_type": "refresh_token", "client_id": "local.a.b", "client_secret": "s",
        "refresh_token": tokens["refresh_token"]}))

    body = json.loads(answer.body)
    assert answer.status == 200 and body["member_id"] == portal.member_id
    assert body["refresh_token"] != tokens["refresh_token"]
    assert again.status == 400 and json.loads(again.body)["error"] == "invalid_grant"  # rotated: used up
    cloud.close()


def test_a_mounted_portal_answers_rest_with_its_limits_through_dispatch():
    cloud = FakeBitrix24Cloud(clock=Clock.manual(), mount="http://127.0.0.1:8000/sandbox")
    portal = b24_messageservice.install_messageservice(cloud.create_portal(mount="http://127.0.0.1:8000"))
    portal.set_bucket(2, 2)
    token = portal.issue_tokens()["access_token"]
    headers = {"Content-Type": "application/json"}

    answers = [portal.dispatch("POST", "/rest/app.info.json", "", headers, json.dumps({"auth": token}).encode())
               for _ in range(3)]

    assert [a.status for a in answers] == [200, 200, 503]
    assert json.loads(answers[0].body)["result"]["CODE"] == cloud.client_id
    assert portal.count("app.info") == 3
    cloud.close()


def test_a_mounted_portal_cannot_move_its_domain():
    cloud = FakeBitrix24Cloud(clock=Clock.manual(), mount="http://127.0.0.1:8000/sandbox")
    portal = cloud.create_portal(mount="http://127.0.0.1:8000")
    try:
        portal.move_domain()
    except RuntimeError:
        pass
    else:
        raise AssertionError("a mounted portal moved")
    cloud.close()


def test_a_mounted_carrier_answers_through_handle_without_a_server():
    carrier = FakeSmsRu(mount="http://127.0.0.1:8000/sandbox/carrier/smsru/")

    reply = carrier.handle("POST", "/sms/send", {"api_id": FakeSmsRu.API_ID, "to": "79991234567", "msg": "Hi",
                                                 "json": "1"}, {})

    assert carrier.base_url == "http://127.0.0.1:8000/sandbox/carrier/smsru"
    assert reply.status == 200 and json.loads(reply.body)["sms"]["79991234567"]["status"] == "OK"
    assert [m.body for m in carrier.messages] == ["Hi"]
    carrier.close()  # nothing to stop
