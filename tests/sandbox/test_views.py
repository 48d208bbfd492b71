"""The sandbox's views: pages render, malformed or out-of-order input gets a 4xx with a reason (never a
500), the wire endpoints hand requests to the emulation, and the log masks secrets."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.test import Client

from sandbox.engine import mask

pytestmark = pytest.mark.django_db


def first_contact(sandbox) -> int:
    return int(sandbox.items("contact")[0]["ID"])


def test_the_pages_render_for_a_fresh_sandbox(client, sandbox_on):
    contact = first_contact(sandbox_on)
    for url in ["/sandbox/", "/sandbox/crm/contact/", "/sandbox/crm/lead/", "/sandbox/crm/deal/",
                f"/sandbox/crm/contact/{contact}/", "/sandbox/log/"]:
        response = client.get(url)
        assert response.status_code == 200, url
    assert b"Install b24portal" in client.get("/sandbox/").content
    assert client.get("/sandbox/registered/").json() == {
        "installed": False, "uninstalled": False, "version": 1, "events": [], "placements": [], "field_types": [], "fields": [],
        "senders": []}
    assert b"Ivan Petrov" in client.get("/sandbox/crm/contact/").content


def test_a_page_opened_on_another_host_moves_to_the_sandbox_portal_address(client, sandbox_on, settings):
    settings.ALLOWED_HOSTS = ["testserver", "localhost"]
    response = client.get("/sandbox/crm/contact/?x=1", HTTP_HOST="localhost")
    assert response.status_code == 302 and response["Location"] == "http://testserver/sandbox/crm/contact/?x=1"


def test_every_page_opened_on_another_host_moves_and_the_polls_answer_in_place(client, sandbox_on, settings):
    settings.ALLOWED_HOSTS = ["testserver", "localhost"]
    contact = first_contact(sandbox_on)
    for url in ["/sandbox/", "/sandbox/crm/contact/", f"/sandbox/crm/contact/{contact}/", "/sandbox/log/"]:
        response = client.get(url, HTTP_HOST="localhost")
        assert response.status_code == 302 and response["Location"] == f"http://testserver{url}", url
    for url in ["/sandbox/log/entries/", f"/sandbox/crm/contact/{contact}/timeline/", "/sandbox/registered/"]:
        assert client.get(url, HTTP_HOST="localhost").status_code == 200, url


def test_unknown_entities_and_items_answer_404(client, sandbox_on):
    assert client.get("/sandbox/crm/company/").status_code == 404
    assert client.get("/sandbox/crm/contact/999999/").status_code == 404
    assert client.get("/sandbox/crm/bogus/1/timeline/").status_code == 404


@pytest.mark.parametrize(("data", "status", "reason"), [
    ({}, 400, "kind must be"),
    ({"kind": "nonsense"}, 400, "kind must be"),
    ({"kind": "placement", "entity": "bogus", "id": "1"}, 400, "unknown CRM entity"),
    ({"kind": "placement", "entity": "contact", "id": "abc"}, 400, "id must be a whole number"),
    ({"kind": "placement", "entity": "contact", "id": "1" * 40}, 400, "id must be a whole number"),
    ({"kind": "placement", "entity": "contact", "id": "999999"}, 404, "no such CRM item"),
    ({"kind": "field", "entity": "contact", "id": "FIRST", "mode": "delete"}, 400, "mode must be"),
    ({"kind": "placement", "entity": "contact", "id": "FIRST"}, 409, "install it first"),
])
def test_a_malformed_or_premature_frame_request_is_refused(client, sandbox_on, data, status, reason):
    if data.get("id") == "FIRST":
        data = {**data, "id": str(first_contact(sandbox_on))}
    response = client.post("/sandbox/frame/", data)
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_the_install_frame_carries_what_bitrix24_posts(client, sandbox_on):
    response = client.post("/sandbox/frame/", {"kind": "install"})

    data = response.json()
    assert response.status_code == 200
    assert data["action"].startswith("http://testserver/b24/install/?DOMAIN=testserver&PROTOCOL=0&LANG=en&APP_SID=")
    assert {"AUTH_ID", "AUTH_EXPIRES", "REFRESH_ID", "member_id", "status", "PLACEMENT"} <= set(data["fields"])
    assert data["fields"]["member_id"] == sandbox_on.member_id


@pytest.mark.parametrize(("data", "reason"), [
    ({}, "unknown BX24 method"),
    ({"method": "eval"}, "unknown BX24 method"),
    ({"method": "setValue", "entity": "nope", "id": "1", "value": "x"}, "unknown CRM entity"),
    ({"method": "setValue", "entity": "contact", "id": "-1", "value": "x"}, "id must be a whole number"),
    ({"method": "setValue", "entity": "contact", "id": "1", "value": "x" * 1001}, "value too long"),
])
def test_a_malformed_bx24_call_is_refused(client, sandbox_on, data, reason):
    response = client.post("/sandbox/bx24/", data)
    assert response.status_code == 400 and reason in response.json()["error"]


@pytest.mark.parametrize(("data", "status", "reason"), [
    ({"phone": "79991234567", "body": "Hi"}, 400, "E.164"),
    ({"phone": "+7999<script>", "body": "Hi"}, 400, "E.164"),
    ({"phone": "+79991234567", "body": "  "}, 400, "1 to 1000 characters"),
    ({"phone": "+79991234567", "body": "x" * 1001}, 400, "1 to 1000 characters"),
    ({"phone": "+79991234567", "body": "Hi"}, 409, "install b24portal first"),
])
def test_a_malformed_or_premature_card_send_is_refused(client, sandbox_on, data, status, reason):
    response = client.post(f"/sandbox/crm/contact/{first_contact(sandbox_on)}/send/", data)
    assert response.status_code == status and reason in response.json()["error"]
    assert sandbox_on.card_messages == {}


def test_a_card_send_to_an_unknown_item_is_404(client, sandbox_on):
    response = client.post("/sandbox/crm/contact/999999/send/", {"phone": "+79991234567", "body": "Hi"})
    assert response.status_code == 404


def test_a_bad_log_cursor_is_refused(client, sandbox_on):
    assert client.get("/sandbox/log/entries/?after=x").status_code == 400
    assert client.get("/sandbox/log/entries/?after=0").json() == {"entries": []}


def test_the_actions_need_the_pages_csrf_token(sandbox_on):
    browser = Client(enforce_csrf_checks=True)
    for url in ["/sandbox/frame/", "/sandbox/bx24/", "/sandbox/uninstall/", "/sandbox/reset/"]:
        assert browser.post(url, {"kind": "install"}).status_code == 403, url


def test_the_wire_endpoints_take_a_servers_post_without_csrf_or_the_browser_middleware(sandbox_on):
    server = Client(enforce_csrf_checks=True)
    for url in ["/rest/app.info.json", "/sandbox/oauth/token/", "/sandbox/carrier/smsru/sms/send"]:
        response = server.post(url, {"x": "1"})
        assert response.status_code != 403, url  # csrf_exempt
        assert "Content-Language" not in response, url  # server_to_server: the locale middleware passed it on
        assert server.put(url).status_code == 405, url  # GET and POST only


def test_the_pages_are_get_only_and_never_cached(client, sandbox_on):
    contact = first_contact(sandbox_on)
    for url in ["/sandbox/", "/sandbox/crm/contact/", f"/sandbox/crm/contact/{contact}/", "/sandbox/log/",
                "/sandbox/log/entries/", f"/sandbox/crm/contact/{contact}/timeline/", "/sandbox/registered/"]:
        assert "no-cache" in client.get(url)["Cache-Control"], url
        assert client.post(url).status_code == 405, url


def test_the_actions_refuse_other_methods(client, sandbox_on):
    assert client.get("/sandbox/frame/").status_code == 405
    assert client.get("/sandbox/reset/").status_code == 405
    assert client.put("/rest/app.info").status_code == 405


def test_the_portal_rest_endpoint_answers_bitrix24_errors_not_500(client, sandbox_on):
    garbage = client.post("/rest/app.info.json", data=b"{not json", content_type="application/json")
    no_token = client.post("/rest/app.info.json", data=json.dumps({}), content_type="application/json")
    unknown = client.post("/rest/no.such.method", data=json.dumps({"auth": "x"}), content_type="application/json")

    assert garbage.status_code == 400 and garbage.json()["error"] == "INVALID_REQUEST"
    assert no_token.status_code == 401 and no_token.json()["error"] == "NO_AUTH_FOUND"
    assert unknown.status_code == 401
    assert sandbox_on.portal.count() == 3  # every request spends a permit of the portal's bucket


def test_the_portal_rest_endpoint_serves_a_valid_token(client, sandbox_on):
    token = sandbox_on.portal.issue_tokens()["access_token"]
    response = client.post("/rest/app.info.json", data=json.dumps({"auth": token}), content_type="application/json")
    assert response.status_code == 200 and response.json()["result"]["CODE"] == sandbox_on.cloud.client_id


def test_the_oauth_server_refuses_a_bad_grant_and_the_log_masks_the_secret(client, sandbox_on):
    form = urlencode({"grant_type": "refresh_token", "client_id": "x", "client_secret": "very-secret-value",
                      "refresh_token": "r" * 40})
    response = client.post("/sandbox/oauth/token/", data=form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"
    entry = client.get("/sandbox/log/entries/").json()["entries"][-1]
    assert entry["kind"] == "oauth" and entry["status"] == 401
    assert entry["params"]["client_secret"] == "very…" and entry["params"]["refresh_token"] == "rrrr…"
    assert "very-secret-value" not in json.dumps(entry)


def test_the_carrier_endpoint_speaks_smsru(client, sandbox_on):
    bad_key = client.post("/sandbox/carrier/smsru/sms/send", {"api_id": "wrong", "to": "79991234567", "msg": "Hi"})
    assert bad_key.status_code == 200 and bad_key.json()["status_code"] == 200  # SMS.ru: "wrong api_id"


def test_mask_cuts_secrets_at_any_depth():
    masked = mask({"auth": {"access_token": "abcdefgh", "domain": "x"}, "AUTH_ID": "12345678", "to": "+7999",
                   "cmd": [{"application_token": "zzzzzzzz"}], "auth[refresh_token]": "qwertyui"})
    assert masked == {"auth": {"access_token": "abcd…", "domain": "x"}, "AUTH_ID": "1234…", "to": "+7999",
                      "cmd": [{"application_token": "zzzz…"}], "auth[refresh_token]": "qwer…"}


def test_uninstall_or_update_before_any_install_sends_nothing_and_reset_starts_a_new_portal(client, sandbox_on):
    old_member = sandbox_on.member_id
    assert client.post("/sandbox/uninstall/").json() == {"delivered": []}
    assert client.post("/sandbox/update/").json() == {"delivered": []}

    response = client.post("/sandbox/reset/")

    assert response.status_code == 200 and response.json()["member_id"] != old_member
    assert client.get("/sandbox/registered/").json()["uninstalled"] is False


def test_a_bx24_set_value_is_stored_for_the_card(client, sandbox_on):
    contact = first_contact(sandbox_on)
    response = client.post("/sandbox/bx24/", {"method": "setValue", "entity": "contact", "id": str(contact),
                                              "value": "+79991234567:Y"})
    assert response.json() == {"saved": True}
    assert sandbox_on.field_values == {("contact", contact): "+79991234567:Y"}


@pytest.mark.parametrize(("url", "body", "content_type"), [
    ("/rest/batch.json", b'{"cmd": {"a": "app.info?x[=1", "b": 5}, "auth": 7}', "application/json"),
    ("/rest/crm.contact.get", b"ID[][][]=1&auth[x]=y", "application/x-www-form-urlencoded"),
    ("/rest/app.info", b"--x\r\nnot multipart", "multipart/form-data"),
    ("/rest/app.info", b"\xff\xfe\x00garbage", "application/json"),
    ("/rest/" + "a" * 300, b"{}", "application/json"),
    ("/sandbox/oauth/token/", b"grant_type[]=refresh_token", "application/x-www-form-urlencoded"),
    ("/sandbox/rest/app.info", b"auth[]=1", "application/x-www-form-urlencoded"),
    ("/sandbox/rest/user.current", b"{}", "application/json"),
    ("/sandbox/carrier/smsru/sms/status", b"sms_id=%ff", "application/x-www-form-urlencoded"),
    ("/rest/app.info", b"x" * 70_000, "application/json"),
])
def test_garbage_on_the_wire_endpoints_never_answers_500(client, sandbox_on, url, body, content_type):
    response = client.post(url, data=body, content_type=content_type)
    assert 200 <= response.status_code < 500, response.content[:300]
    assert sandbox_on.cloud.server_errors == []
