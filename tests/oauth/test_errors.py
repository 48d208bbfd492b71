"""Typed errors and their retry classification; garbage answers and a dead OAuth server never crash
and never lose a token."""

from __future__ import annotations

import socket
import threading
import time

import pytest
import responses

from oauth.errors import (
    B24AccessDenied,
    B24AuthError,
    B24BadResponse,
    B24Error,
    B24MethodNotFound,
    B24OperationLimit,
    B24PortalDeleted,
    B24RateLimited,
    B24TransientError,
    B24TransportError,
)

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(("code", "status", "method", "cls", "retryable"), [
    ("QUERY_LIMIT_EXCEEDED", 503, "crm.deal.add", B24RateLimited, True),
    ("OPERATION_TIME_LIMIT", 429, "crm.deal.list", B24OperationLimit, True),
    ("INTERNAL_SERVER_ERROR", 500, "crm.deal.get", B24TransientError, True),
    ("INTERNAL_SERVER_ERROR", 500, "crm.deal.add", B24Error, False),
    ("insufficient_scope", 403, "crm.deal.get", B24AccessDenied, False),
    ("ACCESS_DENIED", 403, "crm.deal.get", B24AccessDenied, False),
    ("NO_AUTH_FOUND", 401, "crm.deal.get", B24AuthError, False),
    ("PORTAL_DELETED", 500, "crm.deal.get", B24PortalDeleted, False),
    ("ERROR_METHOD_NOT_FOUND", 404, "crm.nothing.get", B24MethodNotFound, False),
    ("ERROR_CORE", 400, "crm.deal.add", B24Error, False),
])
def test_each_documented_code_becomes_a_typed_error_with_its_retry_class(
        client_for, fake_portal, code, status, method, cls, retryable):
    fake_portal.register_method(method, lambda p, params, ctx: True)
    fake_portal.fail_next(method, code, code, status, times=5)
    with pytest.raises(B24Error) as caught:
        client_for(max_wait=0).call(method)
    assert type(caught.value) is cls and caught.value.code == code
    assert caught.value.retryable is retryable and caught.value.http_status == status


def test_a_timed_out_add_is_not_retried_and_says_so(client_for, fake_portal, b24_cloud):
    fake_portal.register_method("crm.deal.add", lambda p, params, ctx: 1)
    fake_portal.set_latency("crm.deal.add", 1.0)
    clock = b24_cloud.clock
    clock.freeze()  # the fake answers only once the test advances its clock: the 0.2 s read timeout is certain
    try:
        parked = clock.sleepers  # (anything already parked stays parked while the clock is frozen)
        with pytest.raises(B24TransportError) as caught:
            client_for(timeout=(2.0, 0.2)).call("crm.deal.add", {"fields": {"TITLE": "x"}})
        assert caught.value.sent and not caught.value.retryable
        assert clock.wait_for_sleepers(parked + 1)  # the request reached the fake and waits for its latency
        assert fake_portal.count("crm.deal.add") == 0  # the fake records a call when its handler finishes
        clock.advance(1.0)
        deadline = time.monotonic() + 10
        while (fake_portal.count("crm.deal.add") < 1 or clock.sleepers > parked) and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        clock.unfreeze()
    assert fake_portal.count("crm.deal.add") == 1  # sent once, never silently again


def test_a_connection_refused_before_sending_is_retryable(client_for, portal):
    portal.rest_endpoint = "http://127.0.0.1:9/rest/"  # nothing listens on the discard port
    with pytest.raises(B24TransportError) as caught:
        client_for().call("crm.deal.add")
    assert not caught.value.sent and caught.value.retryable


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"<html><body>502 Bad Gateway</body></html>", "text/html", 502),
    (b'{"result": {"ID": 1', "application/json", 200),  # truncated JSON
    (b"\x00\xff garbage", "application/octet-stream", 200),
    (b'["not", "an", "object"]', "application/json", 200),
    (b'{"time": {}}', "application/json", 200),  # neither result nor error
])
def test_garbage_answers_become_bad_response_errors(client_for, fake_portal, body, content_type, status):
    with responses.RequestsMock() as mock:
        mock.post(f"{fake_portal.client_endpoint}crm.deal.get", body=body, status=status, content_type=content_type)
        with pytest.raises(B24BadResponse) as caught:
            client_for().call("crm.deal.get")
    assert caught.value.retryable  # a read may be repeated
    with responses.RequestsMock() as mock:
        mock.post(f"{fake_portal.client_endpoint}crm.deal.add", body=body, status=status, content_type=content_type)
        with pytest.raises(B24BadResponse) as caught:
            client_for().call("crm.deal.add")
    assert not caught.value.retryable  # a write may have acted behind the garbage


def test_a_body_cut_short_is_a_transport_error(client_for, portal):
    """A real socket that promises 100 bytes, sends 10 and hangs up."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def answer_truncated() -> None:
        conn, _ = server.accept()
        conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                     b'{"result":')
        conn.close()

    thread = threading.Thread(target=answer_truncated, daemon=True)
    thread.start()
    portal.rest_endpoint = f"http://127.0.0.1:{server.getsockname()[1]}/rest/"
    try:
        with pytest.raises(B24TransportError) as caught:
            client_for().call("crm.deal.add")
    finally:
        server.close()
    assert caught.value.sent and not caught.value.retryable


def test_a_dead_oauth_server_is_a_typed_error_and_no_token_is_lost(client_for, fake_portal, b24_cloud, portal):
    token = portal.tokens.get()
    fake_portal.expire_access_tokens()
    b24_cloud.oauth_down = True
    try:
        with pytest.raises(B24BadResponse) as caught:
            client_for().call("app.info")
    finally:
        b24_cloud.oauth_down = False
    assert caught.value.retryable
    token.refresh_from_db()
    assert portal.tokens.get().refresh_token == token.refresh_token
    assert client_for().call("app.info")["ID"] == fake_portal.app_id  # works once the server is back


def test_a_failure_that_matters_is_journaled_once_not_per_call(client_for, fake_portal, portal):
    from tenants.models import JournalEntry

    fake_portal.register_method("crm.deal.get", lambda p, params, ctx: {})
    fake_portal.fail_next("crm.deal.get", "ACCESS_DENIED", "Access denied!", 403, times=5)
    for _ in range(5):
        with pytest.raises(B24AccessDenied):
            client_for().call("crm.deal.get")
    entries = JournalEntry.objects.filter(portal=portal, kind="rest")
    assert entries.count() == 1 and "ACCESS_DENIED" in entries.get().message and entries.get().level == "error"


def test_a_business_error_is_not_journaled(client_for, fake_portal, portal):
    from tenants.models import JournalEntry

    fake_portal.register_method("crm.deal.get", lambda p, params, ctx: {})
    fake_portal.fail_next("crm.deal.get", "ERROR_NOT_FOUND", "Not found", 400)
    with pytest.raises(B24Error):
        client_for().call("crm.deal.get")
    assert not JournalEntry.objects.filter(portal=portal, kind="rest").exists()
