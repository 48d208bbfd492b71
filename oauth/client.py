"""The Bitrix24 REST client: every call this product makes goes through here.

`PortalClient(portal).call(method, params)` → the `result`; `.batch(commands)` → per-command results
and errors; `.list(method, params)` → every item. Under the hood: the stored token (refreshed under a
row lock when expired or on 401 expired_token), one permit from the portal's shared rate limiter per HTTP
request, one re-POST on a 302 from a renamed portal, typed errors with a retry classification, and a
call-log row per HTTP request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urljoin

import requests
from django.conf import settings

from b24portal.domains import domain_of_endpoint, is_allowed_domain
from b24portal.http import get_session

from . import tokens as token_store
from .errors import (
    B24BadResponse,
    B24Error,
    B24PortalMoved,
    B24TokenExpired,
    B24TransportError,
    error_from_envelope,
)
from .phpquery import build_query

if TYPE_CHECKING:
    from tenants.models import Portal

    from .models import PortalToken

logger = logging.getLogger(__name__)

BATCH_LIMIT = 50
# Methods that only read: a timeout or 5xx on them may be repeated. Everything else (*.add, *.send,
# *.bind, ...) may have had its effect already and is never repeated silently.
SAFE_SUFFIXES = (".get", ".list", ".info", ".current", ".fields", ".time", ".admin", ".access")
SAFE_METHODS = frozenset({"scope", "methods", "method.get", "feature.get", "app.info", "user.current",
                          "server.time", "profile", "event.get", "placement.get", "placement.list"})


def is_safe_method(method: str) -> bool:
    method = method.lower()
    return method in SAFE_METHODS or method.endswith(SAFE_SUFFIXES)


@dataclass
class Envelope:
    """A successful answer: `result` plus the paging and timing fields."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Per-command outcome of a batch: `results[key]` or `errors[key]` (never both)."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, B24Error] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)
    times: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors


def _parse_answer(response: requests.Response, method: str, safe: bool) -> Envelope:
    try:
        payload = response.json()
    except ValueError:
        raise B24BadResponse(f"HTTP {response.status_code} answer is not JSON ({response.headers.get('Content-Type')})",
                             http_status=response.status_code, method=method, safe=safe) from None
    if not isinstance(payload, dict):
        raise B24BadResponse("answer is not a JSON object", http_status=response.status_code, method=method)
    if "error" in payload:
        raise error_from_envelope(str(payload["error"]), str(payload.get("error_description", "")),
                                  http_status=response.status_code, method=method, payload=payload, safe=safe)
    if "result" not in payload:
        raise B24BadResponse("answer has neither result nor error", http_status=response.status_code,
                             method=method, safe=safe)
    time_block = payload.get("time") if isinstance(payload.get("time"), dict) else {}
    return Envelope(result=payload["result"], total=payload.get("total"), next=payload.get("next"),
                    time=time_block)


def post_method(endpoint: str, method: str, params: Mapping[str, Any], access_token: str, *,
                timeout: tuple[float, float] | None = None) -> requests.Response:
    """One HTTP request: JSON body with `auth`. Redirects are returned, not followed (see PortalClient)."""
    url = urljoin(endpoint, method)
    body = json.dumps({**params, "auth": access_token}, ensure_ascii=False, default=str)
    safe = is_safe_method(method)
    try:
        return get_session().post(url, data=body.encode(), headers={"Content-Type": "application/json"},
                                  timeout=timeout or settings.B24_HTTP_TIMEOUT, allow_redirects=False)
    except (requests.ConnectTimeout, requests.exceptions.InvalidURL) as exc:
        raise B24TransportError(f"could not connect: {type(exc).__name__}", sent=False, method=method) from exc
    except requests.ConnectionError as exc:
        # A refused or reset connection before any byte was answered: for a safe method we may retry; for
        # a write we cannot know whether Bitrix24 acted.
        raise B24TransportError(f"connection failed: {type(exc).__name__}", sent=not safe, method=method) from exc
    except requests.RequestException as exc:  # read timeout, truncated body
        raise B24TransportError(f"request failed: {type(exc).__name__}", sent=True, method=method) from exc


def probe_token(rest_endpoint: str, access_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Prove a token from an install or event before anything is stored: one `batch` of `app.info` and
    `user.current` against the portal's own endpoint. Returns (app info, current user).

    The caller has already checked the endpoint's host against the allow-list."""
    domain = domain_of_endpoint(rest_endpoint)
    if domain is None or not is_allowed_domain(domain):
        raise B24PortalMoved("ENDPOINT_NOT_ALLOWED", "the portal endpoint is not on the allow-list")
    params = {"halt": 0, "cmd": {"app": "app.info", "user": "user.current"}}
    response = post_method(rest_endpoint, "batch", params, access_token, timeout=(5.0, 20.0))
    if response.is_redirect:
        raise B24PortalMoved("PORTAL_MOVED", "the portal answered with a redirect; it was renamed")
    envelope = _parse_answer(response, "batch", safe=True)
    batch = _split_batch(envelope.result, {"app": "app.info", "user": "user.current"})
    for key in ("app", "user"):
        if key in batch.errors:
            raise batch.errors[key]
    app_info, user = batch.results.get("app"), batch.results.get("user")
    if not isinstance(app_info, dict) or not isinstance(user, dict):
        raise B24BadResponse("app.info / user.current answers are not objects", http_status=200, method="batch")
    return app_info, user


def _split_batch(result: Any, methods: Mapping[str, str]) -> BatchResult:
    if not isinstance(result, dict):
        raise B24BadResponse("batch answer has no result object", http_status=200, method="batch")
    out = BatchResult()

    def part(name: str) -> dict[str, Any]:
        value = result.get(name)
        return value if isinstance(value, dict) else {}  # Bitrix24 sends [] for an empty part

    for key, error in part("result_error").items():
        if isinstance(error, dict):
            method = methods.get(key, "")
            out.errors[key] = error_from_envelope(str(error.get("error", "UNKNOWN")),
                                                  str(error.get("error_description", "")),
                                                  http_status=None, method=method, payload=error,
                                                  safe=is_safe_method(method))
    for key, value in part("result").items():
        if key not in out.errors:
            out.results[key] = value
    out.totals = {k: v for k, v in part("result_total").items() if isinstance(v, int)}
    out.nexts = {k: v for k, v in part("result_next").items() if isinstance(v, int)}
    out.times = {k: v for k, v in part("result_time").items() if isinstance(v, dict)}
    return out


Command = tuple[str, Mapping[str, Any]] | str


class PortalClient:
    """REST access to one portal with one user's stored token (the service token by default)."""

    def __init__(self, portal: Portal, *, user_id: int | None = None) -> None:
        self.portal = portal
        self.user_id = user_id
        self._token: PortalToken | None = None

    # -- tokens --------------------------------------------------------------------------------
    def _load_token(self) -> PortalToken:
        from .models import PortalToken

        if self._token is None:
            if self.user_id is None:
                self._token = token_store.service_token(self.portal)
            else:
                self._token = PortalToken.objects.get(portal=self.portal, user_id=self.user_id)
        if self._token.is_expired():
            self._token = token_store.refresh_token(self._token.pk, used_access_token=self._token.access_token)
        return self._token

    # -- transport -----------------------------------------------------------------------------
    def _send(self, method: str, params: Mapping[str, Any]) -> Envelope:
        token = self._load_token()
        try:
            return self._send_once(method, params, token.access_token)
        except B24TokenExpired:
            # Exactly one refresh and one repeat; a second expired_token is an error, not a loop.
            self._token = token_store.refresh_token(token.pk, used_access_token=token.access_token)
            return self._send_once(method, params, self._token.access_token)

    def _send_once(self, method: str, params: Mapping[str, Any], access_token: str) -> Envelope:
        endpoint = self.portal.rest_endpoint
        response = post_method(endpoint, method, params, access_token)
        if response.is_redirect:
            endpoint = self._follow_move(response, method)
            response = post_method(endpoint, method, params, access_token)
            if response.is_redirect:
                raise B24PortalMoved("PORTAL_MOVED", "redirected twice; not following", method=method)
        return _parse_answer(response, method, safe=is_safe_method(method))

    def _follow_move(self, response: requests.Response, method: str) -> str:
        """A renamed portal answers its old address with 302 → re-POST (not GET) to the new one, once,
        and remember the new domain."""
        from tenants import actions

        location = response.headers.get("Location", "")
        new_url = urljoin(response.url or self.portal.rest_endpoint, location)
        new_endpoint = new_url[: new_url.lower().find("/rest/") + len("/rest/")] if "/rest/" in new_url.lower() else ""
        domain = domain_of_endpoint(new_endpoint) if new_endpoint else None
        if domain is None or not is_allowed_domain(domain):
            raise B24PortalMoved("PORTAL_MOVED", "redirect target is not an allowed portal host", method=method)
        if domain != self.portal.domain:
            actions.do_change_domain(self.portal, domain=domain, rest_endpoint=new_endpoint, source="302 redirect")
        return new_endpoint

    # -- public API ----------------------------------------------------------------------------
    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._send(method, params or {}).result

    def call_envelope(self, method: str, params: Mapping[str, Any] | None = None) -> Envelope:
        return self._send(method, params or {})

    def batch(self, commands: Mapping[str, Command], *, halt: bool = False) -> BatchResult:
        """Any number of commands, sent as requests of at most 50. Partial failures do not raise: each
        command's error is in `errors`. `$result[key]` references pass through untouched (they only
        resolve within one request of 50)."""
        items = list(commands.items())
        out = BatchResult()
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            methods: dict[str, str] = {}
            cmd: dict[str, str] = {}
            for key, command in chunk:
                method, params = (command, {}) if isinstance(command, str) else command
                methods[key] = method.split("?", 1)[0]
                cmd[key] = method if isinstance(command, str) else f"{method}?{build_query(params)}"
            envelope = self._send("batch", {"halt": 1 if halt else 0, "cmd": cmd})
            part = _split_batch(envelope.result, methods)
            out.results.update(part.results)
            out.errors.update(part.errors)
            out.totals.update(part.totals)
            out.nexts.update(part.nexts)
            out.times.update(part.times)
            if halt and part.errors:
                break
        return out

    def list(self, method: str, params: Mapping[str, Any] | None = None) -> Iterator[Any]:
        """Every item of a list method, page by page (`start` / `next`)."""
        params = dict(params or {})
        start = 0
        while True:
            envelope = self._send(method, {**params, "start": start})
            items = envelope.result
            if isinstance(items, dict) and len(items) == 1 and isinstance(next(iter(items.values())), list):
                items = next(iter(items.values()))  # crm.item.list style: {"items": [...]}
            yield from items if isinstance(items, list) else [items]
            if envelope.next is None:
                return
            start = envelope.next

    def list_fast(self, method: str, params: Mapping[str, Any] | None = None, *, id_field: str = "ID") -> Iterator[Any]:
        """Large sets: `start=-1` (no COUNT), ordered by ID, continuing with a `>ID` filter."""
        params = dict(params or {})
        base_filter = dict(params.pop("filter", {}) or {})
        last_id = 0
        while True:
            page_params = {**params, "order": {id_field: "ASC"}, "filter": {**base_filter, f">{id_field}": last_id},
                           "start": -1}
            items = self._send(method, page_params).result
            if isinstance(items, dict) and len(items) == 1 and isinstance(next(iter(items.values())), list):
                items = next(iter(items.values()))
            if not items:
                return
            yield from items
            last_id = int(items[-1][id_field] if id_field in items[-1] else items[-1][id_field.lower()])
            if len(items) < 50:
                return
