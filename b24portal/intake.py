"""Reading untrusted input: forms, nested PHP-style keys, plain values; and turning problems into 4xx.

Every endpoint that Bitrix24, an API client or a browser can reach reads its input through these helpers.
A problem raises `Rejected(reason, status)`; views wrapped in `rejects_bad_input` answer it as JSON with
that status and reason. Nothing here makes a network call or touches the database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, JsonResponse, QueryDict
from django.http.multipartparser import MultiPartParserError

from .domains import is_allowed_domain, split_host_port
from .phpquery import NestedKeyError, parse_nested

logger = logging.getLogger(__name__)

MEMBER_ID_RE = re.compile(r"^[0-9a-zA-Z]{8,64}$")
# Token lengths differ between doc samples (32, 64, 70 chars): check the alphabet, not the length.
TOKEN_RE = re.compile(r"^[0-9a-zA-Z._-]{16,256}$")
LANG_RE = re.compile(r"^[a-z]{2}(?:[-_][a-zA-Z]{2,4})?$")
EVENT_RE = re.compile(r"^[A-Z0-9_]{3,64}$")

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponse])


class Rejected(Exception):
    """Input we refuse: `reason` is shown to the caller, `status` is the 4xx to answer with."""

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def rejects_bad_input(view: ViewFunc) -> ViewFunc:
    """Turn `Rejected` into a 4xx with its reason (logged once, nothing stored)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except Rejected as exc:
            logger.info("request rejected", extra={"reason": exc.reason, "status": exc.status})
            return JsonResponse({"error": exc.reason}, status=exc.status)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the view's signature; typeshed's _Wrapped can't say so


def frame_response(response: HttpResponse, portal_origin: str) -> HttpResponse:
    """Let exactly this portal frame the page (every other page keeps X-Frame-Options: DENY)."""
    response.xframe_options_exempt = True
    response["Content-Security-Policy"] = f"frame-ancestors {portal_origin}"
    return response


def read_form(request: HttpRequest) -> QueryDict:
    """request.POST, with size and shape problems turned into rejections instead of 500s."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        raise Rejected("bad Content-Length") from None
    if length > settings.B24_MAX_BODY_BYTES:
        raise Rejected(f"payload too large (limit {settings.B24_MAX_BODY_BYTES} bytes)", 413)
    content_type = request.content_type or ""
    if content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        raise Rejected("expected a form-encoded body (application/x-www-form-urlencoded)", 415)
    try:
        return request.POST
    except RequestDataTooBig:
        raise Rejected(f"payload too large (limit {settings.B24_MAX_BODY_BYTES} bytes)", 413) from None
    except TooManyFieldsSent:
        raise Rejected("too many fields", 413) from None
    except (MultiPartParserError, UnicodeDecodeError, ValueError):
        raise Rejected("malformed form body") from None


def nested(form: QueryDict) -> dict[str, Any]:
    """`auth[member_id]=...` style keys as nested dicts (the last value of a repeated key wins)."""
    try:
        return parse_nested((key, value) for key, values in form.lists() for value in values[-1:])
    except NestedKeyError as exc:
        raise Rejected(f"malformed form key: {exc}") from None


def text_field(data: dict[str, Any] | QueryDict, key: str, *, required: bool = True,
               pattern: re.Pattern[str] | None = None, max_length: int = 255, strip: bool = True) -> str:
    """One form value as text, or a `Rejected` naming the key (missing, nested, too long, malformed)."""
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise Rejected(f"missing {key}")
        return ""
    if not isinstance(value, str):
        raise Rejected(f"{key} must be a plain value, not a nested block")
    if strip:
        value = value.strip()
    if len(value) > max_length:
        raise Rejected(f"{key} is too long")
    if pattern is not None and not pattern.match(value):
        raise Rejected(f"{key} is malformed")
    return value


def checked_domain(domain: str) -> str:
    domain = domain.strip().lower()
    if split_host_port(domain) is None:
        raise Rejected("DOMAIN is not a host name")
    if not is_allowed_domain(domain):
        # The SSRF boundary: nothing is ever sent to a host outside the allow-list.
        raise Rejected(f"portal domain {domain!r} is not allowed", 403)
    return domain
