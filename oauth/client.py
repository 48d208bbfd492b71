"""The Bitrix24 REST client: every call this product makes goes through here.

`PortalClient(portal).call(method, params)` → the `result`; `.batch(commands)` → per-command results
and errors; `.list(method, params)` / `.list_fast(...)` → every item. Under the hood: the stored token
(refreshed under a row lock when expired or on 401 expired_token), one permit from the portal's shared
rate limiter per HTTP request (oauth.ratelimit), the operating guard, one re-POST on a 302 from a renamed
portal, typed errors with a retry classification (oauth.errors), a call-log row per HTTP request and a
journal line for failures that need a human (oauth.calllog).

A webhook-connected portal (`portal.is_webhook`) is served by the same client: the calls go to
`<rest_endpoint><user>/<secret>/<method>.json` (oauth.models.WebhookCredential) without an `auth` field and
are never refreshed; a 401 means the webhook was deleted or its secret changed, which is journaled and sent
as `webhook_refused` (the install flow marks the portal so staff add the new URL).

Waiting: a client may sleep at most `max_wait` seconds for a permit (or for a method's operating window).
Beyond that it raises a `B24RetryLater` (`B24RateLimited` / `B24OperationLimit`) carrying `retry_after`.
By default web code waits up to `B24_RATE_WEB_MAX_WAIT` (5 s) and code running inside a Celery task up to
`B24_RATE_TASK_MAX_WAIT` (2 s, enough to pace a few calls): beyond that a task re-queues itself with `self.retry(countdown=retry_delay(exc, ...))`
instead of blocking a worker.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urljoin

import requests
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.utils import timezone

from b24portal.domains import domain_of_endpoint, is_allowed_domain
from b24portal.http import get_session
from b24portal.phpquery import build_query

from . import calllog, ratelimit
from . import tokens as token_store
from .errors import (
    B24AuthError,
    B24BadResponse,
    B24Error,
    B24MethodConfirmWaiting,
    B24OperationLimit,
    B24PortalMoved,
    B24RateLimited,
    B24RetryLater,
    B24TokenExpired,
    B24TransportError,
    error_from_envelope,
)
from .models import PortalToken, WebhookCredential
from .signals import portal_endpoint_changed, webhook_refused

if TYPE_CHECKING:
    from tenants.models import Portal

logger = logging.getLogger(__name__)

BATCH_LIMIT = 50
# Methods that only read: a timeout or 5xx on them may be repeated. Everything else (*.add, *.send,
# *.bind, ...) may have had its effect already and is never repeated silently.
SAFE_SUFFIXES = (".get", ".list", ".info", ".current", ".fields", ".time", ".admin", ".access")
SAFE_METHODS = frozenset({"scope", "methods", "method.get", "feature.get", "app.info", "user.current",
                          "server.time", "profile", "event.get", "placement.get", "placement.list"})
# A 503 QUERY_LIMIT_EXCEEDED was refused before it ran, so even a write may be sent again (through the
# limiter, after a jittered back-off) this many times before the caller gets the error.
MAX_LIMIT_RETRIES = 3


def is_safe_method(method: str) -> bool:
    method = method.lower()
    return method in SAFE_METHODS or method.endswith(SAFE_SUFFIXES)


_task_state = threading.local()


def _task_started(**_: Any) -> None:
    _task_state.depth = getattr(_task_state, "depth", 0) + 1


def _task_finished(**_: Any) -> None:
    _task_state.depth = max(getattr(_task_state, "depth", 0) - 1, 0)


# Celery sends these around every task run, in workers and for eagerly applied tasks alike; a counter in
# this thread is more dependable than `celery.current_task` when several Celery apps have been set up.
task_prerun.connect(_task_started, weak=False, dispatch_uid="oauth.client.task_started")
task_postrun.connect(_task_finished, weak=False, dispatch_uid="oauth.client.task_finished")


def in_celery_task() -> bool:
    """True while a Celery task runs in this thread (also for eagerly applied tasks)."""
    return getattr(_task_state, "depth", 0) > 0


def retry_delay(exc: BaseException, retries: int = 0) -> float:
    """Seconds a Celery task should wait before retrying after `exc` (use as `self.retry(countdown=...)`).

    A limit says how long itself (`retry_after`, or `reset_at` for an operating block); other transient
    errors back off exponentially (1, 2, 4 ... 300 s). Jitter spreads the retries of many tasks."""
    jitter = random.uniform(0, 1)
    if isinstance(exc, B24OperationLimit) and exc.reset_at:
        return max(float(exc.reset_at) - ratelimit.now(), 1.0) + jitter
    if isinstance(exc, B24RetryLater) and exc.retry_after:
        return max(float(exc.retry_after), 1.0) + jitter
    return min(2 ** max(retries, 0), 300) + jitter


@dataclass
class Envelope:
    """A successful answer: `result` plus the paging and timing fields."""

    result: Any
    total: int | None = None
    next: int | None = None
    time: dict[str, Any] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Per-command outcome of a batch: `results[key]` or `errors[key]` (never both).

    `incomplete` is set when a later request of a long batch failed as a whole (after earlier ones were
    sent): the keys of that request and of those not sent carry that error in `errors`."""

    results: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, B24Error] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)
    nexts: dict[str, int] = field(default_factory=dict)
    times: dict[str, dict[str, Any]] = field(default_factory=dict)
    incomplete: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors


def parse_answer(response: requests.Response, method: str, safe: bool) -> Envelope:
    try:
        payload = response.json()
    except ValueError:
        raise B24BadResponse(f"HTTP {response.status_code} answer is not JSON ({response.headers.get('Content-Type')})",
                             http_status=response.status_code, method=method, safe=safe) from None
    if not isinstance(payload, dict):
        raise B24BadResponse("answer is not a JSON object", http_status=response.status_code, method=method,
                             safe=safe)
    if "error" in payload:
        raise error_from_envelope(str(payload["error"]), str(payload.get("error_description", "")),
                                  http_status=response.status_code, method=method, payload=payload, safe=safe)
    if "result" not in payload:
        raise B24BadResponse("answer has neither result nor error", http_status=response.status_code,
                             method=method, safe=safe)
    time_block = payload.get("time")
    if not isinstance(time_block, dict):
        time_block = {}
    total, nxt = payload.get("total"), payload.get("next")
    return Envelope(result=payload["result"], total=total if isinstance(total, int) else None,
                    next=nxt if isinstance(nxt, int) else None, time=time_block)


def post_method(endpoint: str, method: str, params: Mapping[str, Any], access_token: str | None, *,
                timeout: tuple[float, float] | None = None, suffix: str = "") -> requests.Response:
    """One HTTP request: JSON body with `auth` (none for a webhook endpoint, whose URL carries the secret).
    Redirects are returned, not followed (see PortalClient)."""
    url = urljoin(endpoint, method + suffix)
    auth = {} if access_token is None else {"auth": access_token}
    body = json.dumps({**params, **auth}, ensure_ascii=False, default=str)
    safe = is_safe_method(method)
    try:
        response = get_session().post(url, data=body.encode(), headers={"Content-Type": "application/json"},
                                      timeout=timeout or settings.B24_HTTP_TIMEOUT, allow_redirects=False)
        response.content  # noqa: B018  (read the body here, so a cut-off answer is a transport error)
        return response
    except (requests.ConnectTimeout, requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema) as exc:
        raise B24TransportError(f"could not connect: {type(exc).__name__}", sent=False, method=method,
                                safe=safe) from exc
    except requests.ConnectionError as exc:
        # Refused before connecting is "not sent"; but requests also raises ConnectionError for a reset
        # after the body went out, and then a write may have acted. Only a read is safe to repeat.
        refused = "refused" in str(exc).lower() or "NewConnectionError" in repr(exc)
        raise B24TransportError(f"connection failed: {type(exc).__name__}", sent=not refused, method=method,
                                safe=safe) from exc
    except requests.RequestException as exc:  # read timeout, truncated body
        raise B24TransportError(f"request failed: {type(exc).__name__}", sent=True, method=method,
                                safe=safe) from exc


def split_batch(result: Any, methods: Mapping[str, str]) -> BatchResult:
    if not isinstance(result, dict):
        raise B24BadResponse("batch answer has no result object", http_status=200, method="batch")
    out = BatchResult()

    def part(name: str) -> dict[str, Any]:
        value = result.get(name)
        return value if isinstance(value, dict) else {}  # Bitrix24 sends [] for an empty part

    for key, error in part("result_error").items():
        method = methods.get(key, "")
        if isinstance(error, dict):
            out.errors[key] = error_from_envelope(str(error.get("error", "UNKNOWN")),
                                                  str(error.get("error_description", "")),
                                                  http_status=None, method=method, payload=error,
                                                  safe=is_safe_method(method))
        else:  # an odd shape: still an error for that key, never a crash
            out.errors[key] = B24Error("UNKNOWN", str(error)[:200], method=method, payload=error)
    for key, value in part("result").items():
        if key not in out.errors:
            out.results[key] = value
    out.totals = {k: v for k, v in part("result_total").items() if isinstance(v, int)}
    out.nexts = {k: v for k, v in part("result_next").items() if isinstance(v, int)}
    out.times = {k: v for k, v in part("result_time").items() if isinstance(v, dict)}
    return out


def _list_items(result: Any) -> list[Any]:
    """A page's items: a list, or the one list inside `{"items": [...]}` (crm.item.list, tasks.task.list)."""
    if isinstance(result, dict) and len(result) == 1 and isinstance(next(iter(result.values())), list):
        return list(next(iter(result.values())))
    if isinstance(result, list):
        return result
    if isinstance(result, dict):  # PHP arrays with numeric keys arrive as objects
        return list(result.values())
    return [] if result is None else [result]


Command = tuple[str, Mapping[str, Any]] | str


def encode_command(command: Command) -> tuple[str, str]:
    """A batch command → (method, "method?query"). Tuples are encoded the PHP way (nested keys, `$result[...]`
    references kept as text: Bitrix24 decodes the query and then resolves them); strings pass as given."""
    if isinstance(command, str):
        method = command.split("?", 1)[0].strip()
        encoded = command
    else:
        method, params = command
        query = build_query(params)
        encoded = f"{method}?{query}" if query else method
    if not method or method.lower() == "batch":
        raise ValueError(f"not a batchable method: {method!r}")
    return method.lower(), encoded


class PortalClient:
    """REST access to one portal with one user's stored token (the service token by default).

    `max_wait`: the longest this client sleeps for a permit or an operating window (None = by context:
    B24_RATE_TASK_MAX_WAIT inside a Celery task, B24_RATE_WEB_MAX_WAIT elsewhere). `timeout`: the
    (connect, read) timeout of each request (default B24_HTTP_TIMEOUT)."""

    def __init__(self, portal: Portal, *, user_id: int | None = None, max_wait: float | None = None,
                 timeout: tuple[float, float] | None = None) -> None:
        self.portal = portal
        self.user_id = user_id
        self.max_wait = max_wait
        self.timeout = timeout
        self._token: PortalToken | None = None
        self._webhook: WebhookCredential | None = None

    def _max_wait(self) -> float:
        if self.max_wait is not None:
            return self.max_wait
        if in_celery_task():
            return float(settings.B24_RATE_TASK_MAX_WAIT)
        return float(settings.B24_RATE_WEB_MAX_WAIT)

    # -- tokens --------------------------------------------------------------------------------
    def _load_token(self) -> PortalToken:
        if self._token is None:
            if self.user_id is None:
                self._token = token_store.service_token(self.portal)
            else:
                self._token = PortalToken.objects.get(portal=self.portal, user_id=self.user_id)
        if self._token.is_expired():
            self._token = token_store.refresh_token(self._token.pk, used_access_token=self._token.access_token)
        return self._token

    def _load_webhook(self) -> WebhookCredential:
        if self._webhook is None:
            self._webhook = WebhookCredential.objects.filter(portal=self.portal).first()
            if self._webhook is None:
                raise B24AuthError("NO_WEBHOOK", f"portal {self.portal.domain} has no incoming webhook stored")
        if self.user_id is not None and self.user_id != self._webhook.user_id:
            raise B24AuthError("WEBHOOK_USER_ONLY", "a webhook portal is called only as the webhook's user")
        return self._webhook

    def _endpoint(self, rest_endpoint: str) -> str:
        """Where methods are appended: the portal's /rest/, or its webhook's /rest/<user>/<secret>/."""
        return self._load_webhook().endpoint(rest_endpoint) if self.portal.is_webhook else rest_endpoint

    # -- transport -----------------------------------------------------------------------------
    def _send(self, method: str, params: Mapping[str, Any], *,
              commands: Mapping[str, str] | None = None) -> Envelope:
        if self.portal.is_webhook:
            self._load_webhook()
            return self._send_guarded(method, params, None, commands)  # no token, nothing to refresh
        token = self._load_token()
        try:
            try:
                return self._send_guarded(method, params, token.access_token, commands)
            except B24TokenExpired:
                # Exactly one refresh and one repeat; a second expired_token is an error, not a loop.
                token = self._token = token_store.refresh_token(token.pk, used_access_token=token.access_token)
                return self._send_guarded(method, params, token.access_token, commands)
        except B24MethodConfirmWaiting as exc:
            # The administrator's confirmation will be for this very access token (spec §7).
            exc.token_hash = hashlib.sha256(token.access_token.encode()).hexdigest()
            exc.portal_id = self.portal.pk
            raise

    def _sleep_or_raise(self, exc: B24RetryLater) -> None:
        wait = float(exc.retry_after or 0.0)
        if wait > self._max_wait():
            raise exc
        ratelimit.sleep(wait)

    def _send_guarded(self, method: str, params: Mapping[str, Any], access_token: str | None,
                      commands: Mapping[str, str] | None) -> Envelope:
        """Operating guard, then permit + request, repeating a request Bitrix24 refused for its bucket."""
        try:
            ratelimit.check_operating(self.portal, commands.values() if commands else [method])
        except B24OperationLimit as exc:
            self._sleep_or_raise(exc)
        attempt = 0
        while True:
            try:
                return self._send_once(method, params, access_token, commands)
            except B24RateLimited as exc:
                if exc.code != "QUERY_LIMIT_EXCEEDED":
                    raise
                # Our bucket let this through, so someone else shares the portal's bucket (other apps on our
                # IP, or a drifting clock): mark it full for a jittered back-off so EVERY process slows down.
                penalty = min(float(settings.B24_RATE_503_BACKOFF) * 2 ** attempt, 30.0)
                penalty *= random.uniform(0.5, 1.5)
                ratelimit.penalize(self.portal, penalty)
                exc.retry_after = penalty + ratelimit.bucket_for(self.portal).interval
                attempt += 1
                if attempt > MAX_LIMIT_RETRIES or exc.retry_after > self._max_wait():
                    raise  # the caller (a task) retries later; the penalty already slowed everyone else
                # The next permit now lies about `retry_after` ahead: acquire() sleeps until then.

    def _permit(self) -> None:
        wait = ratelimit.acquire(self.portal, max_wait=self._max_wait())
        if wait > 0:
            ratelimit.sleep(wait)

    def _post(self, endpoint: str, method: str, params: Mapping[str, Any], access_token: str | None,
              batch_size: int | None) -> tuple[requests.Response, float]:
        self._permit()
        started = time.monotonic()
        try:
            response = post_method(endpoint, method, params, access_token, timeout=self.timeout,
                                   suffix=".json" if self.portal.is_webhook else "")
        except B24TransportError as exc:
            self._log(method, batch_size, None, exc.code, time.monotonic() - started, None)
            calllog.journal_failure(self.portal, exc, method)
            raise
        return response, time.monotonic() - started

    def _send_once(self, method: str, params: Mapping[str, Any], access_token: str | None,
                   commands: Mapping[str, str] | None) -> Envelope:
        batch_size = len(commands) if commands is not None else None
        response, duration = self._post(self._endpoint(self.portal.rest_endpoint), method, params, access_token,
                                        batch_size)
        if response.is_redirect:
            self._log(method, batch_size, response.status_code, "REDIRECT", duration, None)
            endpoint = self._endpoint(self._follow_move(response, method))
            response, duration = self._post(endpoint, method, params, access_token, batch_size)
            if response.is_redirect:
                exc = B24PortalMoved("PORTAL_MOVED", "redirected twice; not following", method=method,
                                     http_status=response.status_code)
                self._fail(exc, method, batch_size, response.status_code, duration)
        try:
            envelope = parse_answer(response, method, safe=is_safe_method(method))
        except B24Error as exc:
            self._fail(exc, method, batch_size, response.status_code, duration)
        operating = self._record_operating(method, envelope, commands)
        self._log(method, batch_size, response.status_code, "", duration, operating)
        return envelope

    def _fail(self, exc: B24Error, method: str, batch_size: int | None, status: int | None,
              duration: float) -> NoReturn:
        if isinstance(exc, B24OperationLimit):
            exc.reset_at = ratelimit.block_method(self.portal, method, exc.reset_at)
            exc.retry_after = max(exc.reset_at - ratelimit.now(), 0.0)
        self._log(method, batch_size, status, exc.code, duration, None)
        calllog.journal_failure(self.portal, exc, method)
        if self.portal.is_webhook and exc.http_status == 401:
            self._webhook_refused(exc)
        raise exc

    def _webhook_refused(self, exc: B24Error) -> None:
        """A 401 through a webhook is never an expiry: it was deleted or its secret changed. Kept on the
        credential, then the install flow hears of it (webhook_refused) and marks the portal."""
        WebhookCredential.objects.filter(portal=self.portal).update(
            refused_at=timezone.now(), refused_error=f"{exc.code}: {exc.description}"[:255])
        webhook_refused.send(sender=PortalClient, portal=self.portal, error=exc)

    def _record_operating(self, method: str, envelope: Envelope, commands: Mapping[str, str] | None) -> float | None:
        if commands is None:
            ratelimit.record_operating(self.portal, [(method, envelope.time)])
            value = envelope.time.get("operating")
            return float(value) if isinstance(value, int | float) else None
        # A batch: the outer call is not counted; each command's running total sits in result.result_time.
        times = envelope.result.get("result_time") if isinstance(envelope.result, dict) else None
        if not isinstance(times, dict):
            return None
        pairs = [(commands[key], block) for key, block in times.items() if key in commands]
        ratelimit.record_operating(self.portal, pairs)
        values = [float(b["operating"]) for _, b in pairs
                  if isinstance(b, dict) and isinstance(b.get("operating"), int | float)]
        return max(values) if values else None

    def _log(self, method: str, batch_size: int | None, status: int | None, code: str, duration: float,
             operating: float | None) -> None:
        calllog.record(self.portal, method=method, batch_size=batch_size, http_status=status, error_code=code,
                       duration=duration, operating=operating)

    def _follow_move(self, response: requests.Response, method: str) -> str:
        """A renamed portal answers its old address with 302 → re-POST (not GET) to the new one, once,
        and remember the new domain."""
        location = response.headers.get("Location", "")
        new_url = urljoin(response.url or self.portal.rest_endpoint, location)
        new_endpoint = new_url[: new_url.lower().find("/rest/") + len("/rest/")] if "/rest/" in new_url.lower() else ""
        domain = domain_of_endpoint(new_endpoint) if new_endpoint else None
        if domain is None or not is_allowed_domain(domain):
            exc = B24PortalMoved("PORTAL_MOVED", "redirect target is not an allowed portal host", method=method,
                                 http_status=response.status_code)
            calllog.journal_failure(self.portal, exc, method)
            raise exc
        if domain != self.portal.domain:
            portal_endpoint_changed.send(sender=PortalClient, portal=self.portal, domain=domain,
                                         rest_endpoint=new_endpoint, source="302 redirect")
        return new_endpoint

    # -- public API ----------------------------------------------------------------------------
    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        return self._send(method, params or {}).result

    def batch(self, commands: Mapping[str, Command], *, halt: bool = False) -> BatchResult:
        """Any number of commands, sent as requests of at most 50 (one permit each). Partial failures do not
        raise: each command's error is in `errors`. `$result[key]` references pass through untouched (they
        only resolve within one request of 50, so keep a command and what it refers to in one chunk).

        If the first request fails as a whole, its error is raised (nothing happened yet). If a later one
        fails, the result is `incomplete` and the unsent keys carry that error."""
        encoded = {str(key): encode_command(command) for key, command in commands.items()}
        items = list(encoded.items())
        out = BatchResult()
        for start in range(0, len(items), BATCH_LIMIT):
            chunk = items[start : start + BATCH_LIMIT]
            methods = {key: method for key, (method, _) in chunk}
            cmd = {key: text for key, (_, text) in chunk}
            try:
                envelope = self._send("batch", {"halt": 1 if halt else 0, "cmd": cmd}, commands=methods)
                part = split_batch(envelope.result, methods)
            except B24Error as exc:
                if start == 0:
                    raise
                out.incomplete = True
                for key, _ in items[start:]:
                    out.errors[key] = exc
                break
            for key, error in part.errors.items():
                if isinstance(error, B24OperationLimit):  # a 429 inside the batch blocks that sub-method too
                    error.reset_at = ratelimit.block_method(self.portal, methods[key], error.reset_at)
                    error.retry_after = max(error.reset_at - ratelimit.now(), 0.0)
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
            yield from _list_items(envelope.result)
            if envelope.next is None or envelope.next <= start:  # a `next` that does not move would loop
                return
            start = envelope.next

    def list_fast(self, method: str, params: Mapping[str, Any] | None = None, *, id_field: str = "ID") -> Iterator[Any]:
        """Large sets: `start=-1` (no COUNT), ordered by ID, continuing with a `>ID` filter."""
        params = dict(params or {})
        base_filter = dict(params.pop("filter", {}) or {})
        params.pop("order", None)
        last_id = 0
        while True:
            page_params = {**params, "order": {id_field: "ASC"}, "filter": {**base_filter, f">{id_field}": last_id},
                           "start": -1}
            items = _list_items(self._send(method, page_params).result)
            if not items:
                return
            yield from items
            last = items[-1]
            try:
                next_id = int(last[id_field] if id_field in last else last[id_field.lower()])
            except (KeyError, TypeError, ValueError):
                raise B24BadResponse(f"{method} rows have no numeric {id_field}", http_status=200,
                                     method=method, safe=True) from None
            if next_id <= last_id:
                raise B24BadResponse(f"{method} did not advance past {id_field} {last_id}", http_status=200,
                                     method=method, safe=True)
            last_id = next_id
            if len(items) < BATCH_LIMIT:
                return
