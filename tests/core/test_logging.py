"""Log lines are JSON, carry the portal's member_id, and never contain a secret."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.conf import settings

from b24portal.logging import log_context, redact


@pytest.fixture
def log_stream():
    stream = io.StringIO()
    config = json.loads(json.dumps(settings.LOGGING))
    config["handlers"]["console"]["stream"] = stream
    config["root"]["level"] = "INFO"
    logging.config.dictConfig(config)
    yield stream
    logging.config.dictConfig(settings.LOGGING)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_json_with_the_member_id_of_the_context(log_stream):
    with log_context(member_id="a223c6b3710f85df22e9377d6c4f7553"):
        logging.getLogger("tests").info("installed")
    (line,) = lines(log_stream)
    assert line["message"] == "installed" and line["member_id"] == "a223c6b3710f85df22e9377d6c4f7553"


def test_tokens_in_messages_and_extras_are_redacted(log_stream):
    secret = "ahodg4h37n89vo17gbkgq0x1l825nnb5"
    logger = logging.getLogger("tests")
    logger.info("POST auth[access_token]=%s&member_id=x", secret)
    logger.info("answer", extra={"payload": {"refresh_token": secret, "ok": True}, "AUTH_ID": secret})
    logger.info('{"access_token": "%s"}', secret)
    output = log_stream.getvalue()
    assert secret not in output
    assert output.count("***") >= 4


@pytest.mark.parametrize("text", [
    "https://x.bitrix24.com/rest/app.info?auth=SECRETVALUE1234",
    "client_secret=SECRETVALUE1234&grant_type=refresh_token",
    "{'application_token': 'SECRETVALUE1234'}",
    "REFRESH_ID=SECRETVALUE1234",
])
def test_redact_masks_every_form_of_secret(text):
    assert "SECRETVALUE1234" not in redact(text)


# --- The SMS handler key (/b24/messageservice/<key>/) never reaches a log line ------------------------------
# Driven through real requests; every line the configured handlers write is checked for the key.

from datetime import timedelta  # noqa: E402
from types import SimpleNamespace  # noqa: E402

from django.test import Client  # noqa: E402

from b24portal.gunicorn_logger import RedactingGunicornLogger  # noqa: E402
from b24portal.logging import REDACTED_KEY  # noqa: E402
from tests.fakes.b24_messageservice import handler_path, send_from_bitrix24  # noqa: E402
from tests.messageservice import conftest as sms_fixtures  # noqa: E402

# The SMS app's fixtures: a portal with an SMS.ru sender (fake carrier behind it) and its handler key.
fake_smsru = sms_fixtures.fake_smsru
ms_fake_portal = sms_fixtures.ms_fake_portal
b24_portal = sms_fixtures.b24_portal
sms_account = sms_fixtures.sms_account
sms_portal = sms_fixtures.sms_portal

REDACTED_PATH = f"/b24/messageservice/{REDACTED_KEY}/"
PHONE = "+79991234567"


class RequestLineMiddleware:
    """An access-log-like line per request (method, full path, absolute URL), as a request logger writes."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        logging.getLogger("tests.access").info(
            '"%s %s" %s', request.method, request.get_full_path(), response.status_code,
            extra={"url": request.build_absolute_uri(), "request": request})
        return response


@pytest.fixture
def request_lines(settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.core.test_logging.RequestLineMiddleware"]


@pytest.fixture
def key_path(sms_portal, ms_fake_portal) -> tuple[str, str]:
    path = handler_path(ms_fake_portal, sms_fixtures.SENDER_CODE)
    key = sms_portal.handler_key
    assert key and path == f"/b24/messageservice/{key}/"
    return key, path


def assert_key_absent(stream: io.StringIO, key: str) -> list[dict]:
    output = stream.getvalue()
    assert key not in output
    assert key[4:-4] not in output  # not even a part of it
    return lines(stream)


@pytest.mark.django_db
def test_a_handled_message_logs_its_path_without_the_key(
        client, key_path, ms_fake_portal, request_lines, log_stream, django_capture_on_commit_callbacks):
    key, path = key_path
    payload = send_from_bitrix24(ms_fake_portal, sms_fixtures.SENDER_CODE, PHONE, "Hi", with_auth=False)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(f"{path}?from=b24", data=payload)
    assert response.status_code == 200

    logged = assert_key_absent(log_stream, key)
    (access,) = [line for line in logged if line["logger"] == "tests.access"]
    assert access["message"] == f'"POST {REDACTED_PATH}?from=b24" 200'
    assert access["path"] == REDACTED_PATH  # the request context of every line
    assert access["url"] == f"http://testserver{REDACTED_PATH}?from=b24"
    assert REDACTED_PATH in access["request"]


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["unknown key", "wrong application token", "bad body", "GET"])
def test_refused_handler_requests_log_no_key(client, key_path, ms_fake_portal, request_lines, log_stream, case):
    key, path = key_path
    payload = send_from_bitrix24(ms_fake_portal, sms_fixtures.SENDER_CODE, PHONE, "Hi")
    if case == "unknown key":
        key = "Zq" + key[2:]  # one that differs from the real key in two characters only
        path = f"/b24/messageservice/{key}/"
        response, expected = client.post(path, data=payload), (404, "Not Found")
    elif case == "wrong application token":
        payload["auth[application_token]"] = "not-the-portal-token"
        response, expected = client.post(path, data=payload), (403, "Forbidden")
    elif case == "bad body":
        response, expected = client.post(path, data={"type": "SMS"}), (400, "Bad Request")
    else:
        response, expected = client.get(path), (405, "Method Not Allowed (GET)")
    assert response.status_code == expected[0]

    logged = assert_key_absent(log_stream, key)
    warnings = [line for line in logged if line["logger"] == "django.request"]
    assert [w["message"] for w in warnings] == [f"{expected[1]}: {REDACTED_PATH}"]
    assert REDACTED_PATH in warnings[0]["request"]  # the WSGIRequest extra, written as its repr
    assert any(line["logger"] == "tests.access" for line in logged)


@pytest.mark.django_db
def test_a_500_traceback_quoting_the_key_is_redacted(key_path, ms_fake_portal, log_stream, monkeypatch):
    key, path = key_path

    def broken(handler_key: str, code: str):
        raise RuntimeError(f"database said: no row for handler_key={handler_key} url={path}")

    monkeypatch.setattr("messageservice.sending.handler_target", broken)
    payload = send_from_bitrix24(ms_fake_portal, sms_fixtures.SENDER_CODE, PHONE, "Hi")
    response = Client(raise_request_exception=False).post(path, data=payload)
    assert response.status_code == 500

    logged = assert_key_absent(log_stream, key)
    (error,) = [line for line in logged if line["logger"] == "django.request"]
    assert error["message"] == f"Internal Server Error: {REDACTED_PATH}"
    assert "RuntimeError: database said" in error["exc_info"] and REDACTED_PATH in error["exc_info"]


def test_django_server_lines_go_through_the_redacting_handler(log_stream):
    """runserver's request lines (make run) are written by the JSON handler, not Django's own."""
    key = "k3yK3yk3yK3yk3yK3yk3yK3y"
    logging.getLogger("django.server").info('"%s" %s %s', f"POST /b24/messageservice/{key}/ HTTP/1.1", 200, 52)
    (line,) = assert_key_absent(log_stream, key)
    assert line["message"] == f'"POST {REDACTED_PATH} HTTP/1.1" 200 52'
    assert not logging.getLogger("django").handlers and not logging.getLogger("django.server").handlers


@pytest.mark.parametrize("text", [
    "https://app.example.com/b24/messageservice/SECRETVALUE1234abcdef/",
    "HANDLER=https%3A%2F%2Fapp.example.com%2Fb24%2Fmessageservice%2FSECRETVALUE1234abcdef%2F&CODE=x",
    '{"HANDLER": "https:\\/\\/app.example.com\\/b24\\/messageservice\\/SECRETVALUE1234abcdef\\/"}',
    "<WSGIRequest: POST '/b24/messageservice/SECRETVALUE1234abcdef/'>",
    "GET /B24/MessageService/SECRETVALUE1234abcdef HTTP/1.1",
])
def test_redact_masks_the_handler_key_in_every_form_of_url(text):
    masked = redact(text)
    assert "SECRETVALUE1234" not in masked and REDACTED_KEY in masked
    assert redact(masked) == masked


def test_gunicorn_access_and_error_lines_have_no_key(tmp_path):
    import runpy

    from gunicorn.config import Config

    key = "g0n1c0rnK3yg0n1c0rnK3yAA"
    cfg = Config()
    cfg.set("logger_class", runpy.run_path("gunicorn.conf.py")["logger_class"])
    assert cfg.logger_class is RedactingGunicornLogger  # what gunicorn.conf.py selects
    cfg.set("accesslog", str(tmp_path / "access.log"))
    cfg.set("errorlog", str(tmp_path / "error.log"))
    log = cfg.logger_class(cfg)
    log.setup(cfg)  # a reload sets the handlers up again
    try:
        uri = f"/b24/messageservice/{key}/?x=1"
        environ = {"REQUEST_METHOD": "POST", "RAW_URI": uri, "PATH_INFO": uri.split("?")[0],
                   "QUERY_STRING": "x=1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.1",
                   "HTTP_REFERER": f"https://app.example.com{uri}"}
        response = SimpleNamespace(status="404 Not Found", sent=27, headers=[])
        request = SimpleNamespace(headers=[("X-ORIGINAL-URL", uri)])
        log.access(response, request, environ, timedelta(milliseconds=3))
        try:
            raise RuntimeError(f"broken at {uri}")
        except RuntimeError:
            log.exception("Error handling request %s %s", "POST", uri)
    finally:
        for logger in (log.access_log, log.error_log):
            for handler in list(logger.handlers):
                handler.close()
                logger.removeHandler(handler)

    access = (tmp_path / "access.log").read_text()
    error = (tmp_path / "error.log").read_text()
    assert f'"POST {REDACTED_PATH}?x=1 HTTP/1.1" 404 27 "https://app.example.com{REDACTED_PATH}?x=1"' in access
    assert f"Error handling request POST {REDACTED_PATH}?x=1" in error and "RuntimeError: broken at" in error
    assert key not in access + error
