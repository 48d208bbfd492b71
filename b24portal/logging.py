"""Structured logging helpers: the portal context on every line, and secrets never written.

`log_context(member_id=...)` binds fields for the current request or task; `ContextFilter` adds them to
every record; `RedactSecretsFilter` masks token-like values, SMS handler keys and incoming-webhook secrets
(`/rest/<user id>/<secret>/`) in the message, in `extra`
fields (the request `path`, django.request's `request`) and in tracebacks. Settings' LOGGING puts it on
every handler (Django's own loggers propagate to it); gunicorn.conf.py puts it on gunicorn's access and
error logs.
"""

from __future__ import annotations

import contextvars
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from django.http import HttpRequest, HttpResponse

_context: contextvars.ContextVar[dict[str, Any]] = contextvars.ContextVar("log_context", default={})  # noqa: B039

# Names whose values are secrets wherever they appear: form keys, JSON keys, query parameters.
SECRET_NAMES = (
    "access_token", "refresh_token", "application_token", "client_secret", "auth_id", "refresh_id",
    "auth", "password", "psw", "api_id", "apikey", "api_key", "auth_token", "token", "secret",
    "credentials", "authorization", "handler_key",
)  # fmt: skip
_SECRET_KEY_RE = "|".join(SECRET_NAMES)
# key=value (query/form), "key": "value" (JSON), 'key': 'value' (repr), auth[access_token]=value
_SECRET_VALUE_RE = re.compile(
    rf"""(?ix)
    (?P<key>(?:["']?)(?:\w*\[)?(?:{_SECRET_KEY_RE})(?:\])?["']?)
    (?P<sep>\s*[:=]\s*["']?)
    (?P<value>[^"'&\s,}}]+)
    """
)
REDACTED = "***"
# The SMS handler URL /b24/messageservice/<handler key>/: the key is the only proof of messages without an
# author, so it is a secret wherever a path or URL is logged (also %2F-encoded and JSON-escaped "\/").
_SEP = r"(?:/|%2F|\\/)"
_HANDLER_KEY_RE = re.compile(
    rf"(?i)(?P<prefix>b24{_SEP}messageservice{_SEP})(?P<key>(?:(?!%2F|\\/)[^/?#\s\"'&<>])+)"
)
REDACTED_KEY = "<redacted>"
# An incoming webhook's URL /rest/<user id>/<secret>/...: the secret is a credential (urllib3's debug line,
# a connection error naming the URL, an admin pasting it), masked like the handler key.
_WEBHOOK_SECRET_RE = re.compile(
    rf"(?i)(?P<prefix>{_SEP}rest{_SEP}\d+{_SEP})(?P<secret>(?:(?!%2F|\\/)[^/?#\s\"'&<>])+)"
)
# A records API key (records.keys: "b24p_" + 43 URL-safe characters) wherever it appears, e.g. after
# "Authorization: Bearer", where the key-value rule above masks only the scheme word.
_API_KEY_RE = re.compile(r"\bb24p_[A-Za-z0-9_-]{16,}")


def redact(text: str) -> str:
    """Mask every value that follows a secret-looking key, the key of every SMS handler path and the secret
    of every incoming-webhook URL."""
    text = _HANDLER_KEY_RE.sub(lambda m: f"{m.group('prefix')}{REDACTED_KEY}", text)
    text = _WEBHOOK_SECRET_RE.sub(lambda m: f"{m.group('prefix')}{REDACTED_KEY}", text)
    text = _API_KEY_RE.sub(f"b24p_{REDACTED}", text)
    return _SECRET_VALUE_RE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}", text)


def redact_value(value: Any, key: str = "") -> Any:
    if key and key.lower().strip("[]").rsplit("[", 1)[-1] in SECRET_NAMES:
        return REDACTED
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if value is None or isinstance(value, int | float):
        return value
    # Any other object (django.request's `request`, a socket, an exception) is written as its str(): keep
    # the object unless that text carries a secret.
    try:
        text = str(value)
    except Exception:
        return value
    masked = redact(text)
    return value if masked == text else masked


@contextmanager
def log_context(**fields: Any) -> Iterator[None]:
    """Bind fields (e.g. member_id) to every log line written inside the block."""
    token = _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def bind_log_context(**fields: Any) -> None:
    """Add fields to the current context (for the rest of the request or task)."""
    _context.set({**_context.get(), **{k: v for k, v in fields.items() if v is not None}})


_RECORD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


class RedactSecretsFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed format string must not drop the line
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            # Formatted here so that an exception message (a database error quoting a value, a URL) is
            # redacted too; formatters use exc_text when exc_info is gone.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in list(record.__dict__.items()):
            if key not in _RECORD_ATTRS:
                setattr(record, key, redact_value(value, key))
        return True


class RequestContextMiddleware:
    """Starts every request with a clean log context carrying the path (its handler key redacted)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _context.set({"path": redact(request.path)})
        try:
            return self.get_response(request)
        finally:
            _context.reset(token)
