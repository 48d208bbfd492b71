"""call / batch / list against the fake portal over real HTTP."""

from __future__ import annotations

import json

import pytest

from oauth.client import encode_command
from oauth.errors import B24AccessDenied
from tenants.models import JournalEntry, Portal
from tests.oauth.conftest import register_echo, register_items

pytestmark = pytest.mark.django_db


def test_it_calls_with_a_json_body_carrying_the_token(client_for, fake_portal, portal):
    register_echo(fake_portal)
    result = client_for().call("test.echo", {"filter": {">ID": 5}, "select": ["ID", "NAME"]})
    assert result["filter"] == {">ID": 5} and result["select"] == ["ID", "NAME"]
    record = fake_portal.calls("test.echo")[0]
    assert record.http_method == "POST" and record.token == portal.tokens.get().access_token


def test_it_sends_its_user_agent(client_for, fake_portal):
    import responses

    from b24portal.http import USER_AGENT

    with responses.RequestsMock() as mock:
        mock.post(f"{fake_portal.client_endpoint}server.time", json={"result": "now", "time": {}})
        client_for().call("server.time")
        assert mock.calls[0].request.headers["User-Agent"] == USER_AGENT
        assert json.loads(mock.calls[0].request.body)["auth"]


def test_a_batch_of_120_commands_is_three_requests_with_per_command_results(client_for, fake_portal):
    register_echo(fake_portal)
    commands = {f"c{i}": ("test.echo", {"N": i}) for i in range(120)}
    result = client_for().batch(commands)
    assert fake_portal.count("batch") == 3
    assert fake_portal.count("test.echo", in_batch=True) == 120
    assert result.ok and result.results["c119"] == {"N": "119"}


def test_a_batch_returns_partial_failures_without_raising(client_for, fake_portal):
    fake_portal.scopes = ["crm"]  # no placement scope
    fake_portal.register_method("placement.get", lambda p, params, ctx: [], scope="placement")
    result = client_for().batch({"ok": "app.info", "denied": "placement.get"})
    assert "ok" in result.results and isinstance(result.errors["denied"], B24AccessDenied)
    assert result.errors["denied"].code == "insufficient_scope" and not result.errors["denied"].retryable


def test_batch_commands_are_encoded_php_style_and_references_pass_through(client_for, fake_portal):
    register_echo(fake_portal)
    method, text = encode_command(("test.echo", {"filter": {">ID": 5, "NAME": "a&b"}, "ID": "$result[first]"}))
    assert method == "test.echo"
    assert text == "test.echo?filter%5B%3EID%5D=5&filter%5BNAME%5D=a%26b&ID=%24result%5Bfirst%5D"
    result = client_for().batch({"first": ("test.echo", {"X": "7"}),
                                 "second": ("test.echo", {"filter": {"NAME": "a&b"}, "REF": "$result[first][X]"})})
    assert result.results["second"] == {"filter": {"NAME": "a&b"}, "REF": "7"}


def test_a_batch_refuses_a_nested_batch_before_sending(client_for, fake_portal):
    with pytest.raises(ValueError):
        client_for().batch({"x": "batch?cmd[a]=app.info"})
    assert fake_portal.count("batch") == 0


def test_list_follows_start_and_next_over_all_pages(client_for, fake_portal):
    register_items(fake_portal, 120)
    items = list(client_for().list("test.item.list"))
    assert [int(i["ID"]) for i in items] == list(range(1, 121))
    assert [c.params.get("start") for c in fake_portal.calls("test.item.list")] == [0, 50, 100]


def test_list_fast_pages_by_id_without_counting(client_for, fake_portal):
    register_items(fake_portal, 120)
    items = list(client_for().list_fast("test.item.list", {"filter": {"TITLE": "x"}}))
    assert len(items) == 120
    calls = fake_portal.calls("test.item.list")
    assert all(c.params["start"] == -1 and c.params["order"] == {"ID": "ASC"} for c in calls)
    assert [c.params["filter"][">ID"] for c in calls] == [0, 50, 100]
    assert calls[0].params["filter"]["TITLE"] == "x"


def test_an_expired_token_is_refreshed_once_and_the_call_repeated(client_for, fake_portal, b24_cloud):
    fake_portal.expire_access_tokens()
    before = b24_cloud.oauth_count("refresh_token")
    assert client_for().call("app.info")["ID"] == fake_portal.app_id
    assert b24_cloud.oauth_count("refresh_token") == before + 1


def test_a_renamed_portal_is_followed_once_by_re_posting_and_the_domain_is_stored(client_for, fake_portal, portal):
    register_echo(fake_portal)
    old_domain = fake_portal.domain
    fake_portal.move_domain()
    result = client_for().call("test.echo", {"KEEP": "body"})
    assert result == {"KEEP": "body"}  # the body survived: re-POSTed, not turned into a GET
    moved = [c for c in fake_portal.calls("test.echo") if c.host == fake_portal.domain]
    assert len(moved) == 1 and moved[0].http_method == "POST"
    assert [c.http_status for c in fake_portal.calls("test.echo") if c.host == old_domain] == [302]
    portal.refresh_from_db()
    assert portal.domain == fake_portal.domain and portal.rest_endpoint == fake_portal.client_endpoint
    assert JournalEntry.objects.filter(portal=portal, message__contains="renamed").exists()
    # The next call goes straight to the new address.
    client_for().call("test.echo")
    assert fake_portal.count("test.echo") == 3


def test_a_redirect_to_a_host_outside_the_allow_list_is_not_followed(client_for, fake_portal, portal):
    import responses

    from oauth.errors import B24PortalMoved

    with responses.RequestsMock() as mock:
        mock.post(f"{fake_portal.client_endpoint}app.info", status=302,
                  headers={"Location": "https://evil.example.com/rest/app.info"})
        with pytest.raises(B24PortalMoved):
            client_for().call("app.info")
        assert len(mock.calls) == 1
    assert Portal.objects.get(pk=portal.pk).domain == fake_portal.domain
