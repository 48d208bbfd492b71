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
