"""A fake Bitrix24 cloud for tests: real HTTP servers on 127.0.0.1, standard library only.

One :class:`FakeBitrix24Cloud` runs the OAuth server (our ``B24_OAUTH_URL`` and ``B24_SERVER_ENDPOINT``),
and every :class:`FakePortal` it creates runs its own REST server on its own port, so a portal's
``DOMAIN`` is ``127.0.0.1:<port>``. The wire formats follow ``/work/shared/reference/bitrix24-wire-contracts.md``
("the spec" below, cited by section): envelopes, error codes and HTTP statuses, batch, leaky-bucket and
operating limits, rotating refresh tokens, a portal that moved (302) and the payloads Bitrix24 POSTs to an app.

Typical use::

    with FakeBitrix24Cloud() as cloud:
        portal = cloud.create_portal(license="ru_ent250", enterprise=True)
        tokens = portal.issue_tokens(user_id=1, is_admin=True)
        requests.post(portal.client_endpoint + "app.info", json={"auth": tokens["access_token"]})
        assert portal.count("app.info") == 1

All state sits behind one re-entrant lock (``cloud.lock``); every request is recorded
(``portal.requests``, ``cloud.oauth_requests``).

Time. Everything time-dependent (access-token expiry, 180-day refresh-token expiry, the 30 s auth code, the
leaky bucket, the operating window, injected latency, event ``ts``) reads ``cloud.clock``, a
:class:`~tests.fakes.clock.Clock`. ``FakeBitrix24Cloud()`` runs in real time (plus jumps), which live-server,
browser and benchmark tests need; unit tests pass a frozen clock so a bucket drains only when they say so::

    cloud = FakeBitrix24Cloud(clock=Clock.manual())
    cloud.advance(0.5)            # = cloud.clock.advance(0.5); also cloud.clock.freeze() / .unfreeze()
    portal.set_latency("crm.item.get", 2)   # on a frozen clock the call waits until advanced:
    cloud.clock.wait_for_sleepers(1); cloud.advance(2)

Tokens carry ``expires_in`` (and ``expires`` on the fake clock); the service under test computes its own
expiry with its own clock, which a frozen fake clock does not disturb.

Trust (what an app must verify before it lets a token change a portal; spec §1-§3):

* OAuth refresh (``grant_type=refresh_token`` at ``cloud.oauth_url``) answers ``access_token``,
  ``refresh_token`` (rotated: the old one is used up), ``expires``, ``expires_in``, ``scope``,
  ``domain`` (= ``oauth.bitrix.info``), ``server_endpoint``, ``status``, ``client_endpoint``,
  ``member_id``, ``user_id``. Refresh tokens die after 180 days of fake time.
* Another application: ``portal.issue_tokens(app_code="other.app")`` (or ``install_frame(app_code=...)``,
  ``onappinstall(app_code=...)``) issues tokens of a second app registered on the same cloud
  (``cloud.add_app("other.app")`` gives its client id/secret; ``portal.other_app("other.app", version=...)``
  its app.info state). ``app.info`` (on the portal and on ``cloud.server_endpoint``) answers ``CODE`` of the
  token's app; such a refresh token is ``invalid_grant`` with our client credentials.
* Admins: ``portal.add_user(7, is_admin=False)``; ``portal.set_admin(1, False)`` demotes a user, and
  ``user.admin`` says so at once for tokens already issued. Every builder takes ``is_admin``: True/False set
  the user's flag, None (the default) keeps a known user's flag and makes a new user an admin.
  ``portal.install_frame(user_id=7, is_admin=False)`` is a non-admin's install/app frame.
* Lifecycle events: ``portal.onappupdate(new_version=3, application_token="t", is_admin=False,
  apply=False)`` builds ``ONAPPUPDATE`` with that ``data[VERSION]`` and ``auth[application_token]``;
  ``apply=True`` (default) also updates the portal (app.info VERSION, stored application token), ``apply=False``
  is a forged event that changes nothing. ``portal.onappuninstall(clean=True, application_token="x",
  apply=False)`` likewise (``data[CLEAN]`` 1/0).
* Budget: every HTTP request that reaches a portal is recorded and takes a leaky-bucket permit BEFORE
  its token is looked at (spec §3: every request raises the per-portal counter), so made-up, expired or foreign
  tokens cost a permit like real ones. ``portal.count()`` counts all of them, narrowed by ``method``,
  ``status``, ``error`` (e.g. ``"NO_AUTH_FOUND"``), ``token`` or ``in_batch``. ``cloud.server_endpoint``
  is the auth server: it spends no portal permit (its calls are in ``cloud.oauth_requests``).

Incoming webhooks (``local-integrations/local-webhooks.md``): ``url = portal.add_webhook(user_id, scopes)``
gives ``<base_url>/rest/<user>/<secret>/``; ``<url><method>[.json]`` runs as that user within those scopes
(no ``auth``; ``scope`` answers them, ``profile`` says who and ``ADMIN``), takes a permit like any request,
and batches work. A wrong secret or user id (or ``portal.delete_webhook(url)``) is 401 ``INVALID_CREDENTIALS``;
a method outside the scopes is 403 ``insufficient_scope``; app-context methods are 403 ``WRONG_AUTH_TYPE``
(``messageservice.*``: ``ACCESS_DENIED`` "Application context required").

Method handlers (``portal.register_method``) receive ``(portal, params, ctx)`` and return the ``result``
(or a :class:`Paged` for list methods), or raise :class:`B24Error`.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import secrets
import sys
import threading
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from .clock import Clock
from .phpquery import build_php_query, flatten_php, parse_php_pairs, parse_php_query

__all__ = [
    "ALL_SCOPES",
    "DEFAULT_SCOPES",
    "AppInstall",
    "B24Error",
    "CallContext",
    "Clock",
    "EventBinding",
    "FakeApp",
    "FakeBitrix24Cloud",
    "FakePortal",
    "FakeUser",
    "HttpAnswer",
    "MethodHandler",
    "OAuthRecord",
    "Paged",
    "RequestRecord",
    "build_php_query",
    "paginate",
    "php_json",
]

OAUTH_DOMAIN = "oauth.bitrix.info"  # spec §2: the refresh response's `domain` is the auth server
DEFAULT_SCOPES: tuple[str, ...] = ("crm", "placement", "messageservice", "user")
ALL_SCOPES: tuple[str, ...] = (
    "ai_admin",
    "biconnector",
    "bizproc",
    "calendar",
    "call",
    "catalog",
    "crm",
    "delivery",
    "department",
    "disk",
    "documentgenerator",
    "entity",
    "im",
    "imbot",
    "imconnector",
    "imopenlines",
    "intranet",
    "landing",
    "lists",
    "log",
    "mailservice",
    "messageservice",
    "pay_system",
    "placement",
    "pull",
    "rpa",
    "sale",
    "sonet_group",
    "task",
    "telephony",
    "timeman",
    "user",
    "user_basic",
    "userconsent",
    "userfieldconfig",
    "voximplant",
)
BATCH_MAX_COMMANDS = 50  # spec §3 batch
PAGE_SIZE = 50  # spec §3 pagination
OPERATING_WINDOW_MINUTES = 10  # spec §3: ten one-minute buckets
AUTH_CODE_TTL = 30  # spec §2: the authorization code lives 30 s
REFRESH_TOKEN_TTL = 180 * 24 * 3600  # spec §2: a refresh token lives 180 days

# A REST path: /rest/<method>, /rest/<method>.json (spec §3 URL forms). A method with "/" in it is a webhook path.
_REST_PATH = re.compile(r"^/rest/(?P<method>.+?)(?:\.json)?/?$")
# An incoming webhook's path after /rest/: <user id>/<secret>/<method> (local-integrations/local-webhooks.md).
_WEBHOOK_PATH = re.compile(r"^(?P<user>\d+)/(?P<secret>[^/]+)/(?P<method>[^/]+)$")
# What an incoming webhook cannot do: these need an application context (spec §5, §6). Method names, and
# scopes whose every method is app-only.
APP_CONTEXT_METHODS = frozenset({"app.info", "event.bind", "event.unbind", "event.get", "userfieldtype.add",
                                 "userfieldtype.update", "userfieldtype.delete", "userfieldtype.list"})
APP_CONTEXT_SCOPES = frozenset({"placement", "messageservice"})
# Batch back-references: $result[key], $result[key][field], $result[key][0][ID] (spec §3 batch).
_BATCH_REF = re.compile(r"\$(result|result_error|result_total|result_next)\[([^\]]+)\]((?:\[[^\]]*\])*)")
_MISSING = object()

_BAD_GATEWAY_HTML = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


# ---------------------------------------------------------------------------------------------------------
# Public value types


class B24Error(Exception):
    """A Bitrix24 error: rendered as ``{"error": code, "error_description": description, **extra}``."""

    def __init__(self, code: str, description: str, http_status: int = 400, **extra: Any) -> None:
        super().__init__(f"{code}: {description}")
        self.code = code
        self.description = description
        self.http_status = http_status
        self.extra = extra  # e.g. {"argument": "PLACEMENT"} (spec §3 error envelope)

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "error_description": self.description, **self.extra}


def _no_auth() -> B24Error:
    return B24Error("NO_AUTH_FOUND", "Wrong authorization data", 401)


def _expired() -> B24Error:
    return B24Error("expired_token", "The access token provided has expired.", 401)


@dataclass(frozen=True)
class CallContext:
    """Who is calling: passed to every method handler."""

    portal: FakePortal
    user_id: int
    is_admin: bool
    token: str
    method: str
    in_batch: bool = False
    client_id: str = ""  # the application the token was issued to (app.info CODE)
    webhook_scopes: tuple[str, ...] | None = None  # set when called through an incoming webhook

    @property
    def via_webhook(self) -> bool:
        return self.webhook_scopes is not None

    def require_admin(self, description: str = "Access denied!") -> None:
        """Raise 403 ``ACCESS_DENIED`` unless the calling user is a portal admin."""
        if not self.is_admin:
            raise B24Error("ACCESS_DENIED", description, 403)


MethodHandler = Callable[["FakePortal", dict[str, Any], CallContext], Any]


@dataclass
class Paged:
    """A list result: the envelope gets ``total``/``next`` when they are not ``None`` (spec §3 pagination)."""

    items: list[Any]
    total: int | None = None
    next: int | None = None


def paginate(items: Iterable[Any], params: Mapping[str, Any], page_size: int = PAGE_SIZE) -> Paged:
    """Cut one page by the ``start`` param. ``start=-1`` skips the count: no ``total``, no ``next`` (spec §3)."""
    rows = list(items)
    try:
        start = int(params.get("start") or 0)
    except (TypeError, ValueError):
        start = 0
    if start == -1:
        return Paged(rows[:page_size])
    start = max(start, 0)
    end = start + page_size
    return Paged(rows[start:end], total=len(rows), next=end if end < len(rows) else None)


@dataclass
class RequestRecord:
    """One REST call a portal received (or one batch sub-command, ``in_batch=True``)."""

    method: str  # lower-case, without ".json"
    params: dict[str, Any]
    token: str | None
    http_status: int
    error: str | None  # the error code, None on success
    in_batch: bool = False
    http_method: str = ""  # "GET"/"POST"; "" for a batch sub-command
    host: str = ""  # which domain received it (differs after move_domain)
    user_id: int | None = None
    at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None and self.http_status == 200


@dataclass
class OAuthRecord:
    """One call to the OAuth server: the token endpoint (``kind="token"``) or ``<server_endpoint>app.info``."""

    kind: str
    http_method: str
    params: dict[str, Any]
    grant_type: str | None
    http_status: int
    error: str | None
    member_id: str | None = None
    at: float = 0.0


@dataclass
class EventBinding:
    """One ``event.bind`` registration (spec §7)."""

    id: int
    event: str
    handler: str
    auth_type: int
    offline: bool
    auth_connector: str
    options: Any
    bound_by: int

    def as_result(self) -> dict[str, Any]:
        """The ``event.get`` row shape."""
        return {
            "event": self.event,
            "handler": self.handler,
            "auth_type": str(self.auth_type),
            "offline": int(self.offline),
        }


@dataclass
class FakeUser:
    id: int
    name: str
    last_name: str
    email: str
    is_admin: bool


@dataclass(frozen=True)
class FakeApp:
    """An application registered on the auth server: ``client_id`` is also its app.info ``CODE``."""

    client_id: str
    client_secret: str

    @property
    def code(self) -> str:
        return self.client_id


@dataclass
class AppInstall:
    """Another application (not the app under test) installed on a portal: what its ``app.info`` says."""

    code: str
    app_id: int
    version: int = 1
    status: str = "F"
    installed: bool = True
    application_token: str = field(default_factory=lambda: secrets.token_hex(16))


@dataclass
class _AccessToken:
    member_id: str
    user_id: int
    expires_at: float
    client_id: str


@dataclass
class _RefreshToken:
    member_id: str
    user_id: int
    client_id: str
    expires_at: float
    used: bool = False


@dataclass
class _AuthCode:
    member_id: str
    user_id: int
    expires_at: float
    client_id: str
    used: bool = False


@dataclass
class _MethodSpec:
    handler: MethodHandler
    scope: str | None = None  # required scope; None = not checked
    locked: bool = True  # run the handler under the state lock (set False for handlers doing I/O)
    batch_allowed: bool = True


@dataclass
class _InjectedFailure:
    code: str
    description: str
    http_status: int
    times: int


@dataclass
class _Outcome:
    status: int
    result: Any = None
    error: B24Error | None = None
    time: dict[str, Any] | None = None
    total: int | None = None
    next: int | None = None


# ---------------------------------------------------------------------------------------------------------
# HTTP plumbing


@dataclass
class _HttpRequest:
    verb: str
    path: str
    query: str
    headers: Mapping[str, str]
    body: bytes


@dataclass
class _HttpResponse:
    status: int
    body: bytes = b""
    content_type: str = "application/json; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)


HttpAnswer = _HttpResponse  # what ``dispatch`` returns: status, body, content_type, headers

_App = Callable[[_HttpRequest, Any], _HttpResponse]


def _run_app(app: _App, request: _HttpRequest, server: Any, on_crash: Callable[[str], None]) -> _HttpResponse:
    try:
        return app(request, server)
    except Exception as exc:  # a bug in the fake: answer 500 and keep it for the test to see
        on_crash(traceback.format_exc())
        return _json_response(
            500, {"error": "INTERNAL_SERVER_ERROR", "error_description": f"Internal server error ({exc!r})"}
        )


def _json_response(status: int, payload: Any) -> _HttpResponse:
    return _HttpResponse(status, json.dumps(payload, ensure_ascii=False).encode())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection keeps shutdown simple

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        parts = urlsplit(self.path)
        request = _HttpRequest(self.command, parts.path, parts.query, dict(self.headers.items()), body)
        response = _run_app(self.server.app, request, self.server, self.server.on_crash)
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, app: _App, on_crash: Callable[[str], None]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.app = app
        self.on_crash = on_crash
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def domain(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.domain}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that timed out before the (deliberately late) answer: expected, not a bug of the fake.
        if isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
            return
        super().handle_error(request, client_address)


class _Mount:
    """An address another server answers for (e.g. a web app's view calling ``dispatch``): no socket, no
    thread. ``domain`` is what Bitrix24 sends as DOMAIN; ``base_url`` may carry a path prefix."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.domain = urlsplit(self.base_url).netloc

    def stop(self) -> None:
        pass


def _request(verb: str, path: str, query: str, headers: Mapping[str, str] | None, body: bytes) -> _HttpRequest:
    return _HttpRequest(verb.upper(), path, query, dict(headers or {}), body)


def _decode_params(request: _HttpRequest) -> dict[str, Any]:
    """Merge query-string params with a form, multipart or JSON body; the body wins (spec §3 transport)."""
    params = parse_php_query(request.query)
    if not request.body:
        return params
    content_type = next((v for k, v in request.headers.items() if k.lower() == "content-type"), "")
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "application/json":
        try:
            data = json.loads(request.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise B24Error("INVALID_REQUEST", f"Invalid JSON body: {exc}", 400) from exc
        if isinstance(data, dict):
            params.update(data)
    elif mime == "multipart/form-data":
        message = BytesParser(policy=HTTP).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + request.body
        )
        pairs: list[tuple[str, Any]] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name is None:
                continue
            payload = part.get_payload(decode=True) or b""
            pairs.append((str(name), payload.decode("utf-8", "replace")))
        params.update(parse_php_pairs(pairs))
    else:  # application/x-www-form-urlencoded (or unspecified): PHP nested keys
        params.update(parse_php_query(request.body))
    return params


# ---------------------------------------------------------------------------------------------------------
# Small helpers


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"1", "y", "yes", "true", "on"}
    return bool(value)


def _upper_keys(params: Mapping[str, Any]) -> dict[str, Any]:
    """Bitrix24 upper-cases the param keys of many system methods (event.*, feature.get)."""
    return {str(k).upper(): v for k, v in params.items()}


def _iso(ts: float) -> str:
    """ISO 8601 with a UTC offset, as in ``time.date_start`` (spec §3)."""
    return datetime.fromtimestamp(ts).astimezone().isoformat(timespec="seconds")


def php_json(value: Any) -> str:
    """JSON the way PHP ``json_encode`` writes it: compact, ``\\/`` for slashes, ASCII only (spec, sample D).

    An empty mapping is PHP's empty array, ``[]``.
    """
    if isinstance(value, Mapping) and not value:
        return "[]"
    return json.dumps(value, ensure_ascii=True, separators=(",", ":")).replace("/", "\\/")


def _time_block(start: float, finish: float, operating: float, reset_at: int) -> dict[str, Any]:
    """The ``time`` object of every success envelope (spec §3)."""
    return {
        "start": start,
        "finish": finish,
        "duration": finish - start,
        "processing": finish - start,
        "date_start": _iso(start),
        "date_finish": _iso(finish),
        "operating": round(operating, 6),
        "operating_reset_at": reset_at,
    }


def _license_type(license_code: str) -> str:
    """``ru_ent250`` → ``ent250``; ``de_basic`` → ``basic`` (spec §1.3)."""
    return license_code.split("_", 1)[1] if "_" in license_code else license_code


def _license_family(license_code: str) -> str:
    """``ent250`` → ``ent``; ``pro100`` → ``pro`` (spec §1.3)."""
    return re.sub(r"\d+$", "", _license_type(license_code))


# ---------------------------------------------------------------------------------------------------------
# Built-in REST methods (spec §1.3, §7)


def _m_app_info(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    return portal.app_info(ctx.client_id or None)  # the app the token belongs to (spec §1.3)


def _m_user_current(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    user = portal.user(ctx.user_id)
    return {"ID": str(user.id), "NAME": user.name, "LAST_NAME": user.last_name, "EMAIL": user.email}


def _m_user_admin(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    return portal.is_admin(ctx.user_id)


def _m_server_time(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    return _iso(portal.cloud.now())


def _m_scope(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    if _truthy(_upper_keys(params).get("FULL")):
        return list(ALL_SCOPES)
    return list(ctx.webhook_scopes) if ctx.webhook_scopes is not None else list(portal.scopes)


def _m_profile(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    """The caller's basic profile, without any scope (ADMIN is a JSON boolean)."""
    user = portal.user(ctx.user_id)
    return {"ID": str(user.id), "ADMIN": user.is_admin, "NAME": user.name, "LAST_NAME": user.last_name,
            "PERSONAL_GENDER": "", "PERSONAL_PHOTO": "", "TIME_ZONE": None, "TIME_ZONE_OFFSET": 0}


def _m_method_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    name = str(_upper_keys(params).get("NAME") or "").strip().lower()
    if not name:  # spec §7: both false for an empty name
        return {"isExisting": False, "isAvailable": False}
    spec = portal.method_spec(name)
    existing = spec is not None
    unavailable = {m.lower() for m in portal.unavailable_methods}
    granted = ctx.webhook_scopes if ctx.webhook_scopes is not None else portal.scopes
    available = existing and name not in unavailable and (spec.scope is None or spec.scope in granted)
    if available and ctx.via_webhook:  # a webhook cannot call what needs an application context
        available = name not in APP_CONTEXT_METHODS and spec.scope not in APP_CONTEXT_SCOPES
    return {"isExisting": existing, "isAvailable": available}


def _m_feature_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    code = str(_upper_keys(params).get("CODE") or "").strip()
    if not code:
        raise B24Error("CODE_EMPTY", "Parameter CODE is empty", 400)
    value = portal.features.get(code, "N")
    return {"value": "Y" if _truthy(value) else "N"}


def _m_event_bind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    p = _upper_keys(params)
    event = str(p.get("EVENT") or "").strip().upper()
    if not event.startswith("ON"):
        raise B24Error("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    offline = str(p.get("EVENT_TYPE") or "online").strip().lower() == "offline"
    handler = str(p.get("HANDLER") or "").strip()
    if not offline and not handler:
        raise B24Error("ERROR_ARGUMENT", "Handler is empty", 400, argument="HANDLER")
    auth_type = int(p.get("AUTH_TYPE") or 0)
    # spec §7: 403 when a non-admin binds an offline event or a different auth_type
    if not ctx.is_admin and (offline or (auth_type and auth_type != ctx.user_id)):
        raise B24Error("ACCESS_DENIED", "Access denied!", 403)
    connector = str(p.get("AUTH_CONNECTOR") or "")
    for b in portal.event_bindings:
        if (b.event, b.handler, b.auth_type, b.offline, b.auth_connector) == (
            event,
            handler,
            auth_type,
            offline,
            connector,
        ):
            raise B24Error("ERROR_HANDLER_ALREADY_EXIST", "Handler already binded", 400)
    portal.event_bindings.append(
        EventBinding(
            portal.next_handler_id(),
            event,
            handler,
            auth_type,
            offline,
            connector,
            p.get("OPTIONS"),
            ctx.user_id,
        )
    )
    return True


def _m_event_unbind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    p = _upper_keys(params)
    event = str(p.get("EVENT") or "").strip().upper()
    if not event:
        raise B24Error("ERROR_EVENT_NOT_FOUND", "Event not found", 400)
    handler = str(p.get("HANDLER") or "").strip()
    auth_type = int(p.get("AUTH_TYPE") or 0)  # spec §7: 0 or empty = only handlers with an empty auth_type
    offline = str(p.get("EVENT_TYPE") or "online").strip().lower() == "offline"
    keep: list[EventBinding] = []
    removed = 0
    for b in portal.event_bindings:
        if (
            b.event == event
            and b.auth_type == auth_type
            and b.offline == offline
            and (not handler or b.handler == handler)
        ):
            removed += 1
        else:
            keep.append(b)
    portal.event_bindings[:] = keep
    return {"count": removed}


def _m_event_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    # spec §7: non-admins see only their own handlers
    return [b.as_result() for b in portal.event_bindings if ctx.is_admin or b.bound_by == ctx.user_id]


def _m_batch(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:  # pragma: no cover
    raise AssertionError("batch is executed by the dispatcher")  # registered so method.get knows it


_BUILTIN_METHODS: dict[str, _MethodSpec] = {
    "app.info": _MethodSpec(_m_app_info),
    "user.current": _MethodSpec(_m_user_current),
    "user.admin": _MethodSpec(_m_user_admin),
    "server.time": _MethodSpec(_m_server_time),
    "scope": _MethodSpec(_m_scope),
    "profile": _MethodSpec(_m_profile),
    "method.get": _MethodSpec(_m_method_get),
    "feature.get": _MethodSpec(_m_feature_get),
    "event.bind": _MethodSpec(_m_event_bind),
    "event.unbind": _MethodSpec(_m_event_unbind),
    "event.get": _MethodSpec(_m_event_get),
    "batch": _MethodSpec(_m_batch, batch_allowed=False),
}


# ---------------------------------------------------------------------------------------------------------
# The cloud: OAuth server + token store + portals


class FakeBitrix24Cloud:
    """The auth server (``oauth.bitrix.info`` stand-in) plus every portal; a context manager."""

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        clock: Clock | None = None,
        mount: str | None = None,
    ) -> None:
        """``mount``: a base URL (``http://host:port/prefix``) where another server answers for the auth
        server by calling :meth:`dispatch` with the path below the prefix; no server is started then."""
        self.lock = threading.RLock()
        # Every expiry, bucket and window reads this clock. Default: running (real time, plus advance());
        # unit tests pass Clock.manual() so time moves only when they advance it.
        self.clock = clock if clock is not None else Clock()
        # spec §2: local apps have client ids like local.xxxxxxxx.xxxxxxxx
        self.client_id = client_id or f"local.{secrets.token_hex(7)}.{secrets.token_hex(4)}"
        self.client_secret = client_secret or secrets.token_urlsafe(37)
        self.app_code = self.client_id  # app.info CODE
        # Other applications on the same auth server (client_id -> app): see add_app().
        self._apps: dict[str, FakeApp] = {}
        self.access_token_ttl = 3600  # spec §2: one hour
        self.refresh_token_ttl = REFRESH_TOKEN_TTL  # spec §2: 180 days
        self.oauth_down = False  # answer 502 + HTML on every auth-server request
        self.oauth_latency = 0.0
        self.oauth_calls = 0  # requests to the token endpoint (all outcomes)
        self.oauth_requests: list[OAuthRecord] = []
        self.server_errors: list[str] = []  # tracebacks of bugs inside the fake (should stay empty)
        self._portals: dict[str, FakePortal] = {}
        self._access: dict[str, _AccessToken] = {}
        self._refresh: dict[str, _RefreshToken] = {}
        self._codes: dict[str, _AuthCode] = {}
        # The redirect URI of each application's card (client_id -> URI): where /oauth/authorize/ sends the
        # user back (spec §2: set in the app settings, not in the request).
        self.redirect_uris: dict[str, str] = {}
        self._extra_methods: dict[str, _MethodSpec] = {}
        self._closed = False
        self._server: _Server | _Mount = (
            _Mount(mount) if mount is not None else _Server(self._handle_http, self._on_crash)
        )

    # -- public API -----------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return self._server.base_url

    @property
    def oauth_url(self) -> str:
        return f"{self.base_url}/oauth/token/"

    @property
    def server_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    @property
    def portals(self) -> list[FakePortal]:
        with self.lock:
            return list(self._portals.values())

    def dispatch(
        self, verb: str, path: str, query: str = "", headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> HttpAnswer:
        """Answer one HTTP request to the auth server (``path`` below the mount prefix, e.g.
        ``/oauth/token/``) as its own server would: for a cloud created with ``mount``."""
        return _run_app(self._handle_http, _request(verb, path, query, headers, body), self._server, self._on_crash)

    def now(self) -> float:
        """The fake clock's unix time (see :attr:`clock`)."""
        return self.clock.now()

    def advance(self, seconds: float) -> None:
        """Move the fake clock forward: expires tokens and codes, drains buckets, ages operating buckets."""
        self.clock.advance(seconds)

    @property
    def app(self) -> FakeApp:
        """The application under test (``client_id``/``client_secret``; app.info ``CODE`` = client_id)."""
        return FakeApp(self.client_id, self.client_secret)

    def add_app(self, client_id: str | None = None, client_secret: str | None = None) -> FakeApp:
        """Register ANOTHER application on the auth server (e.g. ``"other.app"``); idempotent per client id.
        Tokens issued for it (``portal.issue_tokens(app_code=...)``) work on the portal's REST API, but
        ``app.info`` names that app's ``CODE`` and only its own client credentials can refresh them."""
        with self.lock:
            client_id = client_id or f"app.{secrets.token_hex(7)}.{secrets.token_hex(4)}"
            if client_id == self.client_id:
                return self.app
            app = self._apps.get(client_id)
            if app is None:
                app = FakeApp(client_id, client_secret or secrets.token_urlsafe(37))
                self._apps[client_id] = app
            return app

    def _find_app(self, client_id: Any) -> FakeApp | None:
        with self.lock:
            if client_id == self.client_id:
                return self.app
            return self._apps.get(client_id) if isinstance(client_id, str) else None

    def create_portal(
        self,
        license: str = "ru_pro",
        enterprise: bool = False,
        app_status: str = "L",
        app_id: int = 17,
        version: int = 1,
        language: str = "en",
        member_id: str | None = None,
        scopes: Iterable[str] = DEFAULT_SCOPES,
        mount: str | None = None,
    ) -> FakePortal:
        """Start a portal with its own REST server and return it. ``mount`` (``http://host:port``): another
        server answers ``<mount>/rest/...`` by calling the portal's :meth:`~FakePortal.dispatch`."""
        with self.lock:
            if self._closed:
                raise RuntimeError("cloud is closed")
            member_id = member_id or secrets.token_hex(16)
            if member_id in self._portals:
                raise ValueError(f"portal {member_id} already exists")
            portal = FakePortal(
                self,
                license=license,
                enterprise=enterprise,
                app_status=app_status,
                app_id=app_id,
                version=version,
                language=language,
                member_id=member_id,
                scopes=scopes,
                mount=mount,
            )
            self._portals[member_id] = portal
            return portal

    def portal(self, member_id: str) -> FakePortal:
        with self.lock:
            return self._portals[member_id]

    def register_method(
        self, name: str, handler: MethodHandler, *, scope: str | None = None, locked: bool = True
    ) -> None:
        """Register a method on every existing portal and on portals created later."""
        spec = _MethodSpec(handler, scope=scope, locked=locked)
        with self.lock:
            self._extra_methods[name.lower()] = spec
            for portal in self._portals.values():
                portal.register_method(name, handler, scope=scope, locked=locked)

    def set_oauth_latency(self, seconds: float) -> None:
        """Delay every token-endpoint answer (widens refresh race windows)."""
        self.oauth_latency = seconds

    def oauth_count(self, grant_type: str | None = None, *, status: int | None = None) -> int:
        """How many token-endpoint calls matched ``grant_type`` (any if None) and ``status`` (any if None)."""
        with self.lock:
            return sum(
                1
                for r in self.oauth_requests
                if r.kind == "token"
                and grant_type in (None, r.grant_type)
                and status in (None, r.http_status)
            )

    def close(self) -> None:
        """Stop every server; idempotent."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            portals = list(self._portals.values())
        for portal in portals:
            portal.close()
        self._server.stop()

    def __enter__(self) -> FakeBitrix24Cloud:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- tokens ---------------------------------------------------------------------------------------

    def _issue(
        self, portal: FakePortal, user_id: int, expires_in: int, client_id: str | None = None
    ) -> tuple[str, str, int]:
        """A fresh access/refresh pair. Tokens are 70 chars (spec, sample D: do not assume a length)."""
        with self.lock:
            client_id = client_id or self.client_id
            access, refresh = secrets.token_hex(35), secrets.token_hex(35)
            now = self.now()
            expires = int(now) + expires_in
            self._access[access] = _AccessToken(portal.member_id, user_id, expires, client_id)
            self._refresh[refresh] = _RefreshToken(
                portal.member_id, user_id, client_id, now + self.refresh_token_ttl
            )
            return access, refresh, expires

    def _token_response(
        self,
        portal: FakePortal,
        access: str,
        refresh: str,
        expires: int,
        expires_in: int,
        user_id: int,
        *,
        with_expiry: bool = True,
    ) -> dict[str, Any]:
        """The refresh response, field for field (spec §2)."""
        body: dict[str, Any] = {"access_token": access, "refresh_token": refresh}
        if with_expiry:
            body["expires"] = expires
        body.update(
            {
                "expires_in": expires_in,
                "scope": ",".join(portal.scopes),
                "domain": OAUTH_DOMAIN,
                "server_endpoint": self.server_endpoint,
                "status": portal.app_status,
                "client_endpoint": portal.client_endpoint,
                "member_id": portal.member_id,
            }
        )
        if with_expiry:
            body["user_id"] = user_id
        return body

    def _authenticate(self, token: Any, portal: FakePortal | None) -> tuple[FakePortal, _AccessToken]:
        """Resolve an access token; ``portal=None`` accepts any portal's token (the auth server's app.info)."""
        with self.lock:
            record = self._access.get(token) if isinstance(token, str) and token else None
            if record is None:
                raise _no_auth()
            owner = self._portals.get(record.member_id)
            removed = owner is not None and owner.uninstalled and record.client_id == self.client_id
            if owner is None or removed or (portal is not None and owner is not portal):
                raise _no_auth()  # another portal's token is simply unknown here
            if record.expires_at <= self.now():
                raise _expired()
            return owner, record

    # -- HTTP -----------------------------------------------------------------------------------------

    def _on_crash(self, trace: str) -> None:
        with self.lock:
            self.server_errors.append(trace)

    def _record(self, record: OAuthRecord) -> None:
        with self.lock:
            record.at = self.now()
            self.oauth_requests.append(record)

    def _handle_http(self, request: _HttpRequest, server: _Server | _Mount) -> _HttpResponse:
        is_token = request.path.rstrip("/") == "/oauth/token"
        if is_token:
            with self.lock:
                self.oauth_calls += 1
        if self.oauth_down:  # a proxy in front of a dead auth server: 502 with an HTML body
            self._record(
                OAuthRecord(
                    "token" if is_token else request.path,
                    request.verb,
                    parse_php_query(request.query),
                    None,
                    502,
                    "BAD_GATEWAY",
                )
            )
            return _HttpResponse(502, _BAD_GATEWAY_HTML, "text/html")
        if is_token:
            return self._handle_token(request)
        match = _REST_PATH.match(request.path)
        if match:
            return self._handle_server_rest(request, match.group("method").lower())
        return _json_response(404, {"error": "NOT_FOUND", "error_description": "Not found"})

    def _handle_token(self, request: _HttpRequest) -> _HttpResponse:
        if self.oauth_latency:
            self.clock.sleep(self.oauth_latency)
        try:
            params = _decode_params(request)
        except B24Error:
            params = parse_php_query(request.query)
        grant_type = str(params.get("grant_type") or "") or None
        member_id: str | None = None
        try:
            with self.lock:
                body, member_id = self._grant(params, grant_type)
            status, error = 200, None
        except B24Error as exc:
            status, error, body = exc.http_status, exc.code, exc.body()
        self._record(OAuthRecord("token", request.verb, params, grant_type, status, error, member_id))
        return _json_response(status, body)

    def _grant(self, params: dict[str, Any], grant_type: str | None) -> tuple[dict[str, Any], str | None]:
        """Run one token-endpoint grant (spec §2); raises B24Error with the OAuth error body."""
        if grant_type not in ("refresh_token", "authorization_code"):
            raise B24Error("invalid_request", "Invalid request", 400)
        app = self._find_app(params.get("client_id"))
        if app is None or params.get("client_secret") != app.client_secret:
            raise B24Error("invalid_client", "Invalid client", 401)
        grant: _RefreshToken | _AuthCode | None
        if grant_type == "refresh_token":
            grant = self._refresh.get(str(params.get("refresh_token") or ""))
            # spec §2: refresh tokens rotate (a used one is as good as unknown) and live 180 days
            if grant is None or grant.used or grant.expires_at <= self.now():
                raise B24Error("invalid_grant", "Invalid grant", 400)
        else:
            grant = self._codes.get(str(params.get("code") or ""))
            if grant is None or grant.used or grant.expires_at <= self.now():  # spec §2: codes live 30 s
                raise B24Error("invalid_grant", "Invalid grant", 400)
        if grant.client_id != app.client_id:  # issued to another application (RFC 6749 §5.2)
            raise B24Error("invalid_grant", "Invalid grant", 400)
        portal = self._portals.get(grant.member_id)
        ours = app.client_id == self.client_id
        if portal is None or (ours and portal.uninstalled):  # spec §2: refresh fails once the app was removed
            raise B24Error("invalid_grant", "Invalid grant", 400)
        if ours and portal.payment_required:  # spec §2: no tokens until payment (HTTP status not documented)
            raise B24Error("PAYMENT_REQUIRED", "Payment required", 402)
        grant.used = True  # the old access token stays valid until it expires
        access, refresh, expires = self._issue(portal, grant.user_id, self.access_token_ttl, app.client_id)
        body = self._token_response(
            portal,
            access,
            refresh,
            expires,
            self.access_token_ttl,
            grant.user_id,
            with_expiry=grant_type == "refresh_token",
        )
        return body, portal.member_id

    def _handle_server_rest(self, request: _HttpRequest, method: str) -> _HttpResponse:
        """``<server_endpoint>app.info``: the trusted app status for any portal's token (spec §1.1)."""
        start = self.now()
        params: dict[str, Any] = {}
        member_id: str | None = None
        try:
            params = _decode_params(request)
            portal, access = self._authenticate(params.get("auth"), None)
            member_id = portal.member_id
            if method != "app.info":
                raise B24Error("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
            with self.lock:
                result = portal.app_info(access.client_id)  # the token's application, not always ours
            body = {"result": result, "time": _time_block(start, self.now(), 0.0, int(start) + 600)}
            status, error = 200, None
        except B24Error as exc:
            status, error, body = exc.http_status, exc.code, exc.body()
        self._record(OAuthRecord(f"rest:{method}", request.verb, params, None, status, error, member_id))
        return _json_response(status, body)


# ---------------------------------------------------------------------------------------------------------
# A portal


class FakePortal:
    """One Bitrix24 portal with the app installed; serves ``<base_url>/rest/<method>``.

    Mutable settings tests may change directly: ``app_status``, ``license``, ``version``, ``language``,
    ``scopes``, ``features``, ``unavailable_methods``, ``payment_required``, ``payment_expired``, ``days``,
    ``operating_limit``, ``default_cost``. ``ext`` is free-form state for methods registered later
    (placements, userfield types, senders, CRM items).
    """

    def __init__(
        self,
        cloud: FakeBitrix24Cloud,
        *,
        license: str,
        enterprise: bool,
        app_status: str,
        app_id: int,
        version: int,
        language: str,
        member_id: str,
        scopes: Iterable[str],
        mount: str | None = None,
    ) -> None:
        self.cloud = cloud
        self.lock = cloud.lock
        self.member_id = member_id
        self.application_token = secrets.token_hex(16)
        self.license = license
        self.enterprise = enterprise
        self.app_status = app_status
        self.app_id = app_id
        self.version = version
        self.language = language
        self.scopes: list[str] = list(scopes)
        self.installed = False  # app.info INSTALLED; set by finish_install() (spec §1.2)
        self.uninstalled = False
        self.payment_required = False  # the OAuth server refuses to refresh (spec §2)
        self.payment_expired = "N"
        self.days: int | None = None
        self.features: dict[str, Any] = {}
        self.unavailable_methods: set[str] = set()
        self.users: dict[int, FakeUser] = {}
        self.other_apps: dict[str, AppInstall] = {}  # other applications installed here (see other_app())
        self.event_bindings: list[EventBinding] = []
        self.webhooks: dict[str, tuple[int, tuple[str, ...]]] = {}  # secret -> (user id, scopes)
        self.requests: list[RequestRecord] = []
        self.rejected_503 = 0
        self.operating_limit = 480.0  # spec §3: seconds per method per 10 minutes
        self.default_cost = 0.01
        self.ext: dict[str, Any] = {}
        self.on_uninstall: list[Callable[[FakePortal], None]] = []  # extension hooks (e.g. drop placements)
        self.on_update: list[Callable[[FakePortal], None]] = []
        self.former_domains: list[str] = []
        # The user logged in to this portal in the browser (its /oauth/authorize/ page); None: not logged in.
        self.browser_user: int | None = None
        # Methods an administrator must confirm (spec §7), per access token: method -> waiting/granted/denied.
        self.confirm_methods: dict[str, dict[str, set[str]]] = {}
        self._methods: dict[str, _MethodSpec] = {**_BUILTIN_METHODS, **cloud._extra_methods}
        self._failures: dict[str, list[_InjectedFailure]] = {}
        self._latency: dict[str, float] = {}
        self._costs: dict[str, float] = {}
        self._operating: dict[str, dict[int, float]] = {}  # method -> minute number -> seconds
        self._bucket_burst, self._bucket_rate = (250.0, 5.0) if enterprise else (50.0, 2.0)  # spec §3
        self._bucket_level = 0.0
        self._bucket_at = cloud.now()
        self._handler_ids = 0
        self._server: _Server | _Mount = (
            _Mount(mount) if mount is not None else _Server(self._handle_http, cloud._on_crash)
        )
        self._servers: list[_Server | _Mount] = [self._server]
        self.add_user(1, name="Admin", last_name="Adminov", email="admin@example.com", is_admin=True)

    # -- addresses ------------------------------------------------------------------------------------

    @property
    def domain(self) -> str:
        """What Bitrix24 sends as ``DOMAIN`` (the current one after :meth:`move_domain`)."""
        return self._server.domain

    @property
    def base_url(self) -> str:
        return f"http://{self.domain}"

    @property
    def client_endpoint(self) -> str:
        return f"{self.base_url}/rest/"

    def dispatch(
        self, verb: str, path: str, query: str = "", headers: Mapping[str, str] | None = None, body: bytes = b""
    ) -> HttpAnswer:
        """Answer one HTTP request to ``/rest/...`` as the portal's own server would (for a mounted portal)."""
        request = _request(verb, path, query, headers, body)
        return _run_app(self._handle_http, request, self._server, self.cloud._on_crash)

    @property
    def license_type(self) -> str:
        return _license_type(self.license)

    @property
    def license_family(self) -> str:
        return _license_family(self.license)

    # -- users and tokens -----------------------------------------------------------------------------

    def add_user(
        self,
        user_id: int,
        *,
        name: str | None = None,
        last_name: str = "Tester",
        email: str | None = None,
        is_admin: bool = False,
    ) -> FakeUser:
        with self.lock:
            user = FakeUser(
                user_id, name or f"User{user_id}", last_name, email or f"user{user_id}@example.com", is_admin
            )
            self.users[user_id] = user
            return user

    def user(self, user_id: int) -> FakeUser:
        with self.lock:
            return self.users.get(user_id) or self.add_user(user_id)

    def is_admin(self, user_id: int) -> bool:
        with self.lock:
            user = self.users.get(user_id)
            return bool(user and user.is_admin)

    def set_admin(self, user_id: int, is_admin: bool) -> None:
        """Promote or demote a user; tokens already issued follow at once (``user.admin`` is looked up live)."""
        with self.lock:
            self.user(user_id).is_admin = is_admin

    def _apply_admin(self, user_id: int, is_admin: bool | None) -> None:
        """``is_admin`` True/False sets the flag; None keeps a known user's flag, and a new user is an admin
        (the historical default of every token/payload builder). Lock held."""
        if is_admin is not None:
            self.set_admin(user_id, is_admin)
        elif user_id not in self.users:
            self.add_user(user_id, is_admin=True)

    def other_app(self, code: str, **fields: Any) -> AppInstall:
        """Another application installed on this portal (registered on the cloud via ``cloud.add_app``);
        created on first use, ``fields`` (``version``, ``status``, ``installed``, ``application_token``,
        ``app_id``) set its app.info answer."""
        with self.lock:
            if code == self.cloud.client_id:
                raise ValueError("that is the application under test; use the portal's own attributes")
            self.cloud.add_app(code)
            install = self.other_apps.get(code)
            if install is None:
                install = AppInstall(code, app_id=self.app_id + 100 + len(self.other_apps))
                self.other_apps[code] = install
            for name, value in fields.items():
                if not hasattr(install, name):
                    raise AttributeError(name)
                setattr(install, name, value)
            return install

    def _client_id(self, app_code: str | None) -> str:
        if app_code is None or app_code == self.cloud.client_id:
            return self.cloud.client_id
        return self.other_app(app_code).code

    def issue_tokens(
        self,
        user_id: int = 1,
        is_admin: bool | None = None,
        expires_in: int | None = None,
        *,
        app_code: str | None = None,
    ) -> dict[str, Any]:
        """Fresh valid tokens for a user, shaped like a refresh response. ``is_admin``: see
        :meth:`_apply_admin`. ``app_code``: issue them for ANOTHER application (its app.info names that
        CODE; only its client credentials refresh them). ``expires_in`` defaults to ``cloud.access_token_ttl``."""
        with self.lock:
            self._apply_admin(user_id, is_admin)
            ttl = self.cloud.access_token_ttl if expires_in is None else expires_in
            access, refresh, expires = self.cloud._issue(self, user_id, ttl, self._client_id(app_code))
            return self.cloud._token_response(self, access, refresh, expires, ttl, user_id)

    def add_webhook(
        self, user_id: int = 1, scopes: Iterable[str] = ("crm", "user"), *, is_admin: bool | None = None,
        secret: str | None = None,
    ) -> str:
        """An incoming webhook created by ``user_id`` with these scopes; returns its URL
        (``<base_url>/rest/<user>/<secret>/``). ``is_admin``: see :meth:`_apply_admin`."""
        with self.lock:
            self._apply_admin(user_id, is_admin)
            secret = secret or secrets.token_hex(8)
            self.webhooks[secret] = (user_id, tuple(scopes))
            return f"{self.base_url}/rest/{user_id}/{secret}/"

    def delete_webhook(self, url_or_secret: str) -> None:
        """The webhook stops working (Bitrix24: deleted, or its secret regenerated)."""
        secret = url_or_secret.rstrip("/").rsplit("/", 1)[-1]
        with self.lock:
            self.webhooks.pop(secret, None)

    def _webhook_context(self, path: str) -> tuple[str, CallContext | None]:
        """``(method, context)`` of a webhook path, or ``(method, None)`` when its credentials are wrong."""
        match = _WEBHOOK_PATH.match(path)
        if match is None:
            return path, None
        method = match.group("method").lower()
        with self.lock:
            hook = self.webhooks.get(match.group("secret"))
            if hook is None or hook[0] != int(match.group("user")):
                return method, None
            user_id, scopes = hook
            return method, CallContext(self, user_id, self.is_admin(user_id), "", method, webhook_scopes=scopes)

    def issue_auth_code(
        self, user_id: int = 1, is_admin: bool | None = None, *, app_code: str | None = None
    ) -> str:
        """A one-time ``code`` for ``grant_type=authorization_code``; it lives 30 s (spec §2)."""
        with self.lock:
            self._apply_admin(user_id, is_admin)
            code = secrets.token_hex(35)
            self.cloud._codes[code] = _AuthCode(
                self.member_id, user_id, self.cloud.now() + AUTH_CODE_TTL, self._client_id(app_code)
            )
            return code

    def expire_access_tokens(self) -> None:
        """Every access token issued so far for this portal is now expired (401 ``expired_token``)."""
        with self.lock:
            past = self.cloud.now() - 1
            for record in self.cloud._access.values():
                if record.member_id == self.member_id:
                    record.expires_at = min(record.expires_at, past)

    def revoke_tokens(self, app_code: str | None = None) -> None:
        """Forget every access and refresh token of this portal (401 ``NO_AUTH_FOUND`` / ``invalid_grant``),
        or only those of application ``app_code``."""
        with self.lock:
            for store in (self.cloud._access, self.cloud._refresh, self.cloud._codes):
                for token in [
                    t
                    for t, r in store.items()
                    if r.member_id == self.member_id and app_code in (None, r.client_id)
                ]:
                    del store[token]

    # -- test controls --------------------------------------------------------------------------------

    def register_method(
        self, name: str, handler: MethodHandler, *, scope: str | None = None, locked: bool = True
    ) -> None:
        """Add (or replace) a REST method. ``handler(portal, params, ctx)`` returns the result or raises
        :class:`B24Error`. With ``scope``, a portal without that scope gets 403 ``insufficient_scope``.
        ``locked=False`` runs the handler outside the state lock (for handlers that do network I/O)."""
        with self.lock:
            self._methods[name.lower()] = _MethodSpec(handler, scope=scope, locked=locked)

    def require_confirmation(self, method: str) -> None:
        """``method`` needs an administrator's confirmation (spec §7): every access token gets 401
        ``METHOD_CONFIRM_WAITING`` until :meth:`decide_method`; a new token (after a refresh) waits again."""
        with self.lock:
            self.confirm_methods.setdefault(method.lower(), {"waiting": set(), "granted": set(), "denied": set()})

    def decide_method(self, method: str, confirmed: bool) -> list[tuple[str, int | str]]:
        """The administrator decides for every token waiting on ``method``: those tokens are granted (or get
        403 ``METHOD_CONFIRM_DENIED``) and ``ONAPPMETHODCONFIRM`` (``data[TOKEN]``, ``data[METHOD]``,
        ``data[CONFIRMED]``) is delivered to the bound handler once per token."""
        with self.lock:
            gate = self.confirm_methods[method.lower()]
            tokens = sorted(gate["waiting"])
            gate["waiting"].clear()
            gate["granted" if confirmed else "denied"].update(tokens)
            language = self.language
        outcomes: list[tuple[str, int | str]] = []
        for token in tokens:
            data = {"TOKEN": token, "METHOD": method, "CONFIRMED": "1" if confirmed else "0", "LANGUAGE_ID": language}
            outcomes += self.deliver_event("ONAPPMETHODCONFIRM", data, with_tokens=False)
        return outcomes

    def method_spec(self, name: str) -> _MethodSpec | None:
        with self.lock:
            return self._methods.get(name.lower())

    def fail_next(
        self, method: str, code: str, description: str = "", http_status: int = 400, times: int = 1
    ) -> None:
        """Make the next ``times`` calls to ``method`` fail with this error (checked before auth)."""
        with self.lock:
            self._failures.setdefault(method.lower(), []).append(
                _InjectedFailure(code, description or code, http_status, times)
            )

    def set_latency(self, method: str, seconds: float) -> None:
        """Wait this long on the cloud's clock before answering ``method`` (not holding the lock). On a
        frozen clock the call waits until the test advances it (``clock.wait_for_sleepers`` sees it)."""
        with self.lock:
            self._latency[method.lower()] = seconds

    def set_cost(self, method: str, seconds: float) -> None:
        """The fake execution time one call of ``method`` adds to its operating total."""
        with self.lock:
            self._costs[method.lower()] = seconds

    def set_bucket(self, burst: float, rate: float) -> None:
        """Leaky bucket size X and drain rate Y per second; also empties the bucket."""
        with self.lock:
            self._bucket_burst, self._bucket_rate = float(burst), float(rate)
            self._bucket_level, self._bucket_at = 0.0, self.cloud.now()

    @property
    def bucket(self) -> tuple[float, float]:
        """``(burst, rate)`` of the leaky bucket."""
        return self._bucket_burst, self._bucket_rate

    @property
    def bucket_level(self) -> float:
        """How full the leaky bucket is now (permits in use)."""
        with self.lock:
            return self._drained_level(self.cloud.now())

    def _drained_level(self, now: float) -> float:
        """The bucket level at ``now``. Elapsed time is rounded to microseconds: unix times near 1.7e9 carry
        float noise of ~1e-7 s, which must not turn an advance(0.1) into 0.0999999 s of draining."""
        elapsed = max(0.0, round(now - self._bucket_at, 6))
        return max(0.0, self._bucket_level - elapsed * self._bucket_rate)

    def operating(self, method: str) -> float:
        """The method's operating seconds in the current 10-minute window."""
        with self.lock:
            return self._operating_state(method.lower())[0]

    def reset_operating(self) -> None:
        with self.lock:
            self._operating.clear()

    def count(
        self,
        method: str | None = None,
        *,
        status: int | None = None,
        in_batch: bool | None = None,
        error: str | None = None,
        token: str | None = None,
    ) -> int:
        """How many received calls of ``method`` (any method if None) match: any outcome, incl. 302/503 and
        401 for a bad or made-up token, unless ``status``/``error``/``token`` narrow it. Every HTTP request
        that reached the portal is ``count(in_batch=False)``."""
        return len(self.calls(method, status=status, in_batch=in_batch, error=error, token=token))

    def calls(
        self,
        method: str | None = None,
        *,
        status: int | None = None,
        in_batch: bool | None = None,
        error: str | None = None,
        token: str | None = None,
    ) -> list[RequestRecord]:
        name = method.lower() if method is not None else None
        with self.lock:
            return [
                r
                for r in self.requests
                if name in (None, r.method)
                and status in (None, r.http_status)
                and in_batch in (None, r.in_batch)
                and error in (None, r.error)
                and token in (None, r.token)
            ]

    def next_handler_id(self) -> int:
        with self.lock:
            self._handler_ids += 1
            return self._handler_ids

    # -- lifecycle ------------------------------------------------------------------------------------

    def app_info(self, app_code: str | None = None) -> dict[str, Any]:
        """The ``app.info`` result (spec §1.3) of the app under test, or of another app (``app_code``)."""
        with self.lock:
            if app_code is not None and app_code != self.cloud.client_id:
                other = self.other_app(app_code)
                return {
                    "ID": other.app_id,
                    "CODE": other.code,
                    "VERSION": other.version,
                    "STATUS": other.status,
                    "INSTALLED": other.installed,
                    "PAYMENT_EXPIRED": "N",
                    "DAYS": None,
                    "LANGUAGE_ID": self.language,
                    "LICENSE": self.license,
                    "LICENSE_TYPE": self.license_type,
                    "LICENSE_FAMILY": self.license_family,
                }
            return {
                "ID": self.app_id,
                "CODE": self.cloud.app_code,
                "VERSION": self.version,
                "STATUS": self.app_status,
                "INSTALLED": self.installed,
                "PAYMENT_EXPIRED": self.payment_expired,
                "DAYS": self.days,
                "LANGUAGE_ID": self.language,
                "LICENSE": self.license,
                "LICENSE_TYPE": self.license_type,
                "LICENSE_FAMILY": self.license_family,
            }

    def finish_install(self) -> None:
        """Stands in for ``BX24.installFinish()``: ``INSTALLED`` becomes true (spec §1.2)."""
        with self.lock:
            self.installed = True

    def uninstall(self) -> None:
        """Remove the app: its tokens are revoked and event handlers deleted (spec §1.5). Other apps'
        tokens keep working."""
        with self.lock:
            self.uninstalled = True
            self.installed = False
            self.event_bindings.clear()
            self.revoke_tokens(self.cloud.client_id)
            for hook in self.on_uninstall:
                hook(self)

    def reinstall(self) -> None:
        """Install the app again after :meth:`uninstall` (a new application_token; not finished yet)."""
        with self.lock:
            self.uninstalled = False
            self.installed = False
            self.application_token = secrets.token_hex(16)

    def move_domain(self) -> FakePortal:
        """The portal changes its address (spec §3): a new server takes over with the same member_id, tokens
        and state, and every old server answers REST calls with ``302 Found`` + ``Location`` on the new one.
        Returns this same portal object, whose ``domain``/``base_url`` now are the new ones."""
        with self.lock:
            if isinstance(self._server, _Mount):
                raise RuntimeError("a mounted portal cannot move: its address belongs to another server")
            new_server = _Server(self._handle_http, self.cloud._on_crash)
            self.former_domains.append(self._server.domain)
            self._server = new_server
            self._servers.append(new_server)
            return self

    def close(self) -> None:
        with self.lock:
            servers, self._servers = self._servers, []
        for server in servers:
            server.stop()

    # -- payload builders (what Bitrix24 POSTs to the app) --------------------------------------------

    def _application_token(self, app_code: str | None) -> str:
        if app_code is None or app_code == self.cloud.client_id:
            return self.application_token
        return self.other_app(app_code).application_token

    def install_frame(
        self,
        user_id: int = 1,
        is_admin: bool | None = None,
        placement: str = "DEFAULT",
        with_new_fields: bool = True,
        *,
        app_code: str | None = None,
        application_token: str | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The install / app page POST as ``(query, form)`` (spec §1.1, sample A), with fresh tokens of
        ``user_id``. ``is_admin=False`` makes it a non-admin user's frame (the tokens carry that user's
        rights: ``user.admin`` says false); None keeps a known user's flag. ``app_code`` makes it ANOTHER
        application's frame (its tokens and APPLICATION_TOKEN); ``application_token`` overrides
        APPLICATION_TOKEN (a forged re-POST). Without ``with_new_fields`` it is the pre-2026-08 shape: no
        SERVER_ENDPOINT, APPLICATION_TOKEN, APPLICATION_SCOPE, PLACEMENT."""
        tokens = self.issue_tokens(user_id=user_id, is_admin=is_admin, app_code=app_code)
        with self.lock:
            query = {
                "DOMAIN": self.domain,
                "PROTOCOL": "0",
                "LANG": self.language,
                "APP_SID": secrets.token_hex(16),
            }
            form = {
                "AUTH_ID": tokens["access_token"],
                "AUTH_EXPIRES": str(tokens["expires_in"]),
                "REFRESH_ID": tokens["refresh_token"],
            }
            if with_new_fields:
                form["SERVER_ENDPOINT"] = self.cloud.server_endpoint
                form["APPLICATION_TOKEN"] = application_token or self._application_token(app_code)
                form["APPLICATION_SCOPE"] = ",".join(self.scopes)
            form["member_id"] = self.member_id
            form["status"] = self.app_status
            if with_new_fields:
                form["PLACEMENT"] = placement
            return query, form

    def placement_frame(
        self,
        placement: str,
        options: Mapping[str, Any] | None = None,
        user_id: int = 1,
        is_admin: bool | None = None,
        with_new_fields: bool = True,
        *,
        app_code: str | None = None,
        application_token: str | None = None,
    ) -> tuple[dict[str, str], dict[str, str]]:
        """A widget POST: the install-frame fields plus ``PLACEMENT`` and ``PLACEMENT_OPTIONS`` as a PHP JSON
        string, slashes escaped (spec §4, samples C and D)."""
        query, form = self.install_frame(
            user_id,
            is_admin,
            placement,
            with_new_fields,
            app_code=app_code,
            application_token=application_token,
        )
        form["PLACEMENT"] = placement
        form["PLACEMENT_OPTIONS"] = php_json(dict(options or {}))
        return query, form

    def auth_block(
        self,
        *,
        with_tokens: bool = True,
        user_id: int = 1,
        is_admin: bool | None = None,
        app_code: str | None = None,
        application_token: str | None = None,
    ) -> dict[str, str]:
        """The ``auth`` object of an event (spec §1.6): the full key set, or without tokens only the
        required keys. ``app_code``/``application_token`` as in :meth:`install_frame`."""
        block: dict[str, str] = {}
        if with_tokens:
            tokens = self.issue_tokens(user_id=user_id, is_admin=is_admin, app_code=app_code)
            block["access_token"] = tokens["access_token"]
            block["expires_in"] = str(tokens["expires_in"])
        with self.lock:
            block["scope"] = ",".join(self.scopes)
            block["domain"] = self.domain
            block["server_endpoint"] = self.cloud.server_endpoint
            block["status"] = self.app_status
            block["client_endpoint"] = self.client_endpoint
            block["member_id"] = self.member_id
            if with_tokens:
                block["refresh_token"] = tokens["refresh_token"]
            block["application_token"] = application_token or self._application_token(app_code)
        return block

    def event_payload(
        self,
        event: str,
        data: Mapping[str, Any] | None = None,
        with_tokens: bool = True,
        *,
        user_id: int = 1,
        is_admin: bool | None = None,
        handler_id: int | None = None,
        auth: Mapping[str, str] | None = None,
        app_code: str | None = None,
        application_token: str | None = None,
    ) -> dict[str, str]:
        """An event POST as flattened form keys: ``event``, ``event_handler_id``, ``data[...]``, ``ts``,
        ``auth[...]`` (spec §1.6). ``auth`` overrides the auth block entirely."""
        event = event.upper()
        if handler_id is None:
            with self.lock:
                bound = next((b for b in self.event_bindings if b.event == event and not b.offline), None)
                handler_id = bound.id if bound else self.next_handler_id()
        block = (
            dict(auth)
            if auth is not None
            else self.auth_block(
                with_tokens=with_tokens,
                user_id=user_id,
                is_admin=is_admin,
                app_code=app_code,
                application_token=application_token,
            )
        )
        payload: dict[str, str] = {"event": event, "event_handler_id": str(handler_id)}
        payload.update(flatten_php(data or {}, "data"))
        payload["ts"] = str(int(self.cloud.now()))
        payload.update(flatten_php(block, "auth"))
        return payload

    def onappinstall(
        self,
        user_id: int = 1,
        is_admin: bool | None = None,
        *,
        app_code: str | None = None,
        application_token: str | None = None,
    ) -> dict[str, str]:
        """``ONAPPINSTALL`` with full tokens (spec §1.4, sample A)."""
        with self.lock:
            version = self.version if app_code in (None, self.cloud.client_id) else self.other_app(
                str(app_code)
            ).version
            data = {
                "VERSION": str(version),
                "ACTIVE": "Y",
                "INSTALLED": "Y",
                "LANGUAGE_ID": self.language,
            }
        return self.event_payload(
            "ONAPPINSTALL",
            data,
            True,
            user_id=user_id,
            is_admin=is_admin,
            app_code=app_code,
            application_token=application_token,
        )

    def onappuninstall(
        self, clean: bool = True, *, application_token: str | None = None, apply: bool = True
    ) -> dict[str, str]:
        """Uninstall the app, then build ``ONAPPUNINSTALL``: ``data[CLEAN]`` 1/0 and an auth block of only
        domain, server_endpoint, client_endpoint, member_id, application_token (spec §1.5).

        ``apply=False`` builds the payload WITHOUT uninstalling (a forged event: the app stays installed,
        its tokens keep working). ``application_token`` replaces the portal's (e.g. an attacker's value)."""
        if apply:
            self.uninstall()
        with self.lock:
            auth = {
                "domain": self.domain,
                "server_endpoint": self.cloud.server_endpoint,
                "client_endpoint": self.client_endpoint,
                "member_id": self.member_id,
                "application_token": application_token or self.application_token,
            }
            data = {"LANGUAGE_ID": self.language, "CLEAN": 1 if clean else 0}
        return self.event_payload("ONAPPUNINSTALL", data, auth=auth)

    def onappupdate(
        self,
        new_version: int | None = None,
        user_id: int = 1,
        is_admin: bool | None = None,
        *,
        application_token: str | None = None,
        previous_version: int | None = None,
        apply: bool = True,
    ) -> dict[str, str]:
        """Update the app: set the version (``new_version``, default +1), ROTATE ``application_token`` (to
        ``application_token`` if given) and drop the event handlers (spec §1.5: "on app delete or update the
        app's handlers are removed"), then build ``ONAPPUPDATE`` with ``data[VERSION]``,
        ``data[PREVIOUS_VERSION]``, the new application token and fresh tokens of ``user_id``.

        ``apply=False`` builds the same payload WITHOUT updating the portal (a forged or replayed event:
        app.info still shows the old VERSION, the stored application token is unchanged); pass
        ``is_admin=False`` for a non-admin's tokens and ``previous_version`` to override PREVIOUS_VERSION."""
        with self.lock:
            previous = self.version if previous_version is None else previous_version
            version = new_version if new_version is not None else self.version + 1
            app_token = application_token or secrets.token_hex(16)
            if apply:
                self.version = version
                self.application_token = app_token
                self.event_bindings.clear()
                for hook in self.on_update:
                    hook(self)
            data = {
                "VERSION": str(version),
                "PREVIOUS_VERSION": str(previous),
                "LANGUAGE_ID": self.language,
            }
        return self.event_payload(
            "ONAPPUPDATE",
            data,
            True,
            user_id=user_id,
            is_admin=is_admin,
            application_token=app_token,
        )

    def onapppayment(
        self,
        status: str = "P",
        payment_expired: str = "N",
        days: int | None = 30,
        *,
        with_application_token: bool = False,
    ) -> dict[str, str]:
        """Set the payment state (seen by app.info) and build ``ONAPPPAYMENT``. As in the doc sample, its
        auth block has no ``application_token`` unless asked for (spec §1.5)."""
        with self.lock:
            self.app_status, self.payment_expired, self.days = status, payment_expired, days
            data = {
                "CODE": self.cloud.app_code,
                "VERSION": self.version,
                "STATUS": status,
                "PAYMENT_EXPIRED": payment_expired,
                "DAYS": days,
                "LANGUAGE_ID": self.language,
            }
        auth = self.auth_block()
        if not with_application_token:
            del auth["application_token"]
        return self.event_payload("ONAPPPAYMENT", data, auth=auth)

    def deliver_event(
        self,
        event: str,
        data: Mapping[str, Any] | None = None,
        with_tokens: bool = True,
        timeout: float = 10.0,
    ) -> list[tuple[str, int | str]]:
        """POST the event to every online handler bound to it, as Bitrix24's queue would: form-encoded, no
        retries, nothing before ``finish_install()`` (spec §1.2, §1.6). Returns ``(handler, status|error)``."""
        event = event.upper()
        with self.lock:
            if not self.installed or self.uninstalled:
                return []
            targets = [b for b in self.event_bindings if b.event == event and not b.offline]
        outcomes: list[tuple[str, int | str]] = []
        for binding in targets:
            payload = self.event_payload(event, data, with_tokens, handler_id=binding.id)
            body = build_php_query(payload)
            req = urllib.request.Request(
                binding.handler,
                data=body.encode(),
                method="POST",
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    outcomes.append((binding.handler, resp.status))
            except urllib.error.HTTPError as exc:
                outcomes.append((binding.handler, exc.code))
            except OSError as exc:
                outcomes.append((binding.handler, repr(exc)))
        return outcomes

    # -- REST server ----------------------------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self.lock:
            record.at = self.cloud.now()
            self.requests.append(record)

    def _handle_http(self, request: _HttpRequest, server: _Server | _Mount) -> _HttpResponse:
        if request.path.rstrip("/") == "/oauth/authorize" and server is self._server:
            return self._authorize(request)
        match = _REST_PATH.match(request.path)
        if match is None:
            return _json_response(404, {"error": "NOT_FOUND", "error_description": "Not found"})
        method = match.group("method").lower()
        if server is not self._server:
            # spec §3: the old address of a portal that changed its domain answers 302; the client must
            # read Location and re-POST. The body is not looked at.
            location = f"{self.base_url}{request.path}" + (f"?{request.query}" if request.query else "")
            self._record(
                RequestRecord(method, {}, None, 302, None, http_method=request.verb, host=server.domain)
            )
            return _HttpResponse(302, b"", "text/html; charset=utf-8", {"Location": location})
        # spec §3 leaky bucket: EVERY request raises the portal's counter before anything is looked at, so
        # a request with a bad, made-up, expired or another portal's token, a webhook path or a body that
        # does not parse costs a permit like any other (the spec names no exception).
        with self.lock:
            allowed = self._bucket_take()
            if not allowed:
                self.rejected_503 += 1
        try:
            params = _decode_params(request)
        except B24Error as exc:
            failure = exc if allowed else B24Error("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
            self._record(
                RequestRecord(
                    method,
                    {},
                    None,
                    failure.http_status,
                    failure.code,
                    http_method=request.verb,
                    host=server.domain,
                )
            )
            return _json_response(failure.http_status, failure.body())
        token = params.get("auth") if isinstance(params.get("auth"), str) else None
        if not allowed:
            # rejected requests are not executed and do not fill the bucket
            error = B24Error("QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
            self._record(
                RequestRecord(
                    method, params, token, 503, error.code, http_method=request.verb, host=server.domain
                )
            )
            return _json_response(503, error.body())
        webhook: CallContext | None = None
        if "/" in method:  # an incoming webhook: /rest/<user>/<secret>/<method>[.json]
            method, webhook = self._webhook_context(match.group("method"))  # the secret is case-sensitive
            if webhook is None:
                error = B24Error("INVALID_CREDENTIALS", "Invalid request credentials", 401)
                self._record(
                    RequestRecord(
                        method, params, None, 401, error.code, http_method=request.verb, host=server.domain
                    )
                )
                return _json_response(401, error.body())
        outcome = self._call(method, params, token, http_method=request.verb, host=server.domain, ctx=webhook)
        if outcome.error is not None:
            return _json_response(outcome.status, outcome.error.body())
        body: dict[str, Any] = {"result": outcome.result}
        if outcome.next is not None:
            body["next"] = outcome.next
        if outcome.total is not None:
            body["total"] = outcome.total
        body["time"] = outcome.time
        return _json_response(200, body)

    def _authorize(self, request: _HttpRequest) -> _HttpResponse:
        """The portal's ``/oauth/authorize/`` page (spec §2): GET shows "Allow" / "Deny" to the logged-in
        :attr:`browser_user`; the POSTed decision redirects to the app card's redirect URI with ``code,
        state, domain, member_id, scope, server_domain`` (or ``error=access_denied``). An unknown
        ``client_id``, an app without a redirect URI or not installed here: 400; nobody logged in: 401."""

        def page(status: int, title: str, body: str) -> _HttpResponse:
            text = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                    f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")
            return _HttpResponse(status, text.encode(), "text/html; charset=utf-8")

        try:
            params = _decode_params(request)
        except B24Error:
            return page(400, "Bad request", "")
        client_id = str(params.get("client_id") or "")
        state = str(params.get("state") or "")
        with self.lock:
            app = self.cloud._find_app(client_id)
            redirect_uri = self.cloud.redirect_uris.get(client_id) if app else None
            ours = client_id == self.cloud.client_id
            installed = not self.uninstalled if ours else client_id in self.other_apps
            user_id = self.browser_user
        if app is None:
            return page(400, "Unknown application", "<p id='error'>No application with this client_id.</p>")
        if not redirect_uri or not installed:
            return page(400, "Application unavailable", "<p id='error'>The application is not installed.</p>")
        if user_id is None:
            return page(401, "Log in to Bitrix24", "<p id='login-required'>Log in to continue.</p>")
        if request.verb != "POST":
            hidden = (f"<input type='hidden' name='client_id' value='{html.escape(client_id)}'>"
                      f"<input type='hidden' name='state' value='{html.escape(state)}'>")
            return page(200, "Allow access?", (
                f"<p>The application <b>{html.escape(client_id)}</b> asks to act as user {user_id}.</p>"
                f"<form method='post' action='/oauth/authorize/'>{hidden}"
                "<button id='allow' name='decision' value='allow'>Allow</button>"
                "<button id='deny' name='decision' value='deny'>Deny</button></form>"))
        if params.get("decision") == "allow":
            code = self.issue_auth_code(user_id, app_code=client_id)
            with self.lock:
                answer = {"code": code, "state": state, "domain": self.domain, "member_id": self.member_id,
                          "scope": ",".join(self.scopes), "server_domain": OAUTH_DOMAIN}
        else:
            answer = {"error": "access_denied", "error_description": "The user denied access", "state": state}
        location = redirect_uri + ("&" if "?" in redirect_uri else "?") + urlencode(answer)
        return _HttpResponse(302, b"", "text/html; charset=utf-8", {"Location": location})

    def _bucket_take(self) -> bool:
        """Leaky bucket (spec §3): +1 per HTTP request, drains at rate/s, refuses above burst. Lock held."""
        now = self.cloud.now()
        self._bucket_level = self._drained_level(now)
        self._bucket_at = now
        if self._bucket_level + 1 > self._bucket_burst + 1e-9:
            return False
        self._bucket_level += 1
        return True

    def _operating_state(self, method: str) -> tuple[float, int]:
        """``(seconds used in the window, operating_reset_at)``: ten one-minute buckets (spec §3). Lock held."""
        current = int(self.cloud.now() // 60)
        buckets = self._operating.setdefault(method, {})
        for minute in [m for m in buckets if m <= current - OPERATING_WINDOW_MINUTES]:
            del buckets[minute]
        oldest = min(buckets) if buckets else current
        return sum(buckets.values()), (oldest + OPERATING_WINDOW_MINUTES) * 60

    def _prepare(
        self, method: str, ctx: CallContext | None, token: Any, in_batch: bool
    ) -> tuple[CallContext, _MethodSpec]:
        """Everything that may refuse a call before it runs. Lock held."""
        queue = self._failures.get(method)
        if queue:
            failure = queue[0]
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            raise B24Error(failure.code, failure.description, failure.http_status)
        if ctx is None:
            _, access = self.cloud._authenticate(token, self)
            ctx = CallContext(
                self,
                access.user_id,
                self.is_admin(access.user_id),
                str(token),
                method,
                client_id=access.client_id,
            )
        else:
            ctx = dataclasses.replace(ctx, method=method, in_batch=in_batch)
        spec = self._methods.get(method)
        if spec is None:
            raise B24Error("ERROR_METHOD_NOT_FOUND", "Method not found!", 404)
        if in_batch and not spec.batch_allowed:  # spec §3: no nested batch since rest 24.0.0
            raise B24Error("ERROR_BATCH_METHOD_NOT_ALLOWED", "Method is not allowed for batch usage", 405)
        if ctx.via_webhook and (method in APP_CONTEXT_METHODS or spec.scope in APP_CONTEXT_SCOPES):
            if spec.scope == "messageservice":  # spec §6
                raise B24Error("ACCESS_DENIED", "Application context required", 403)
            raise B24Error(  # spec §3, §5
                "WRONG_AUTH_TYPE",
                "Current authorization type is denied for this method Application context required",
                403,
            )
        granted = ctx.webhook_scopes if ctx.webhook_scopes is not None else self.scopes
        if spec.scope is not None and spec.scope not in granted:
            raise B24Error(
                "insufficient_scope",
                "The request requires higher privileges than provided by the access token",
                403,
            )
        gate = self.confirm_methods.get(method)
        if gate is not None:  # spec §7: the grant (or refusal) belongs to the access token
            if ctx.token in gate["denied"]:
                raise B24Error("METHOD_CONFIRM_DENIED", "Method call denied", 403)
            if ctx.token not in gate["granted"]:
                gate["waiting"].add(ctx.token)
                raise B24Error("METHOD_CONFIRM_WAITING", "Waiting for confirmation", 401)
        if method != "batch" and self._operating_state(method)[0] > self.operating_limit:
            # spec §3: once the sum passed the limit, the NEXT call of that method gets 429; others still work
            raise B24Error("OPERATION_TIME_LIMIT", "Method is blocked due to operation time limit.", 429)
        return ctx, spec

    def _call(
        self,
        method: str,
        params: dict[str, Any],
        token: Any,
        *,
        http_method: str,
        host: str,
        ctx: CallContext | None = None,
        in_batch: bool = False,
    ) -> _Outcome:
        """Run one method (HTTP call or batch sub-command) and record it."""
        start = self.cloud.now()
        delay = self._latency.get(method, 0.0)
        if delay:
            self.cloud.clock.sleep(delay)  # a frozen clock: waits until the test advances it
        executed = False
        outcome = _Outcome(200)
        user_id: int | None = ctx.user_id if ctx else None
        try:
            with self.lock:
                ctx, spec = self._prepare(method, ctx, token, in_batch)
            user_id = ctx.user_id
            executed = True
            if method == "batch":
                result: Any = self._run_batch(params, ctx, host)
            elif spec.locked:
                with self.lock:
                    result = spec.handler(self, params, ctx)
            else:
                result = spec.handler(self, params, ctx)
            if isinstance(result, Paged):
                outcome.result, outcome.total, outcome.next = result.items, result.total, result.next
            else:
                outcome.result = result
        except B24Error as exc:
            outcome = _Outcome(exc.http_status, error=exc)
        except Exception as exc:  # a handler bug: Bitrix24 would say 500
            self.cloud._on_crash(traceback.format_exc())
            outcome = _Outcome(
                500, error=B24Error("INTERNAL_SERVER_ERROR", f"Internal server error ({exc!r})", 500)
            )
        with self.lock:
            if executed and method != "batch":  # spec §3: a batch itself is not counted, its sub-calls are
                self._operating.setdefault(method, {})
                minute = int(self.cloud.now() // 60)
                bucket = self._operating[method]
                bucket[minute] = bucket.get(minute, 0.0) + self._costs.get(method, self.default_cost)
            if outcome.error is None:
                operating, reset_at = self._operating_state(method)
                outcome.time = _time_block(start, self.cloud.now(), operating, reset_at)
            self._record(
                RequestRecord(
                    method,
                    params,
                    str(token) if token else None,
                    outcome.status,
                    outcome.error.code if outcome.error else None,
                    in_batch,
                    http_method,
                    host,
                    user_id,
                )
            )
        return outcome

    def _run_batch(self, params: dict[str, Any], ctx: CallContext, host: str) -> dict[str, Any]:
        """Execute ``cmd`` (spec §3 batch): one HTTP request, sub-calls through the same dispatcher."""
        commands = params.get("cmd")
        if isinstance(commands, list):
            commands = {str(i): c for i, c in enumerate(commands)}
        if not isinstance(commands, dict):
            commands = {}
        if len(commands) > BATCH_MAX_COMMANDS:
            raise B24Error("ERROR_BATCH_LENGTH_EXCEEDED", "Max batch length exceeded", 400)
        halt = _truthy(params.get("halt"))
        parts: dict[str, dict[str, Any]] = {
            "result": {},
            "result_error": {},
            "result_total": {},
            "result_next": {},
            "result_time": {},
        }
        for key, command in commands.items():
            method, sub_params = self._parse_command(str(command), parts)
            outcome = self._call(
                method, sub_params, ctx.token, http_method="", host=host, ctx=ctx, in_batch=True
            )
            if outcome.error is not None:
                parts["result_error"][key] = {
                    "error": outcome.error.code,
                    "error_description": outcome.error.description,
                }
                if halt:
                    break
                continue
            parts["result"][key] = outcome.result
            if outcome.total is not None:
                parts["result_total"][key] = outcome.total
            if outcome.next is not None:
                parts["result_next"][key] = outcome.next
            parts["result_time"][key] = outcome.time
        # spec §3: every empty part is [] (PHP's empty array), not {}
        return {name: (part or []) for name, part in parts.items()}

    @staticmethod
    def _parse_command(command: str, parts: Mapping[str, Mapping[str, Any]]) -> tuple[str, dict[str, Any]]:
        """``"crm.deal.get?ID=$result[a][0][ID]"`` → method + params, with back-references resolved."""
        method, _, query = command.partition("?")
        method = method.strip().strip("/").lower().removesuffix(".json")
        pairs = [(k, _resolve_refs(v, parts)) for k, v in parse_qsl(query, keep_blank_values=True)]
        return method, parse_php_pairs(pairs)


def _lookup_ref(match: re.Match[str], parts: Mapping[str, Mapping[str, Any]]) -> Any:
    kind, key, path = match.group(1), match.group(2), match.group(3)
    value: Any = parts.get(kind, {}).get(key, _MISSING)
    for segment in re.findall(r"\[([^\]]*)\]", path):
        if isinstance(value, Mapping):
            value = value.get(segment, _MISSING)
        elif isinstance(value, list) and segment.isdigit() and int(segment) < len(value):
            value = value[int(segment)]
        else:
            value = _MISSING
        if value is _MISSING:
            break
    return value


def _resolve_refs(value: str, parts: Mapping[str, Mapping[str, Any]]) -> Any:
    """Replace ``$result[...]`` references. A value that is one whole reference takes the referenced data
    as is (it may be a list or an object); inside longer text, scalars are interpolated. Unresolvable
    references are left untouched."""
    whole = _BATCH_REF.fullmatch(value)
    if whole is not None:
        found = _lookup_ref(whole, parts)
        return value if found is _MISSING else found

    def _sub(match: re.Match[str]) -> str:
        found = _lookup_ref(match, parts)
        if found is _MISSING or isinstance(found, Mapping | list):
            return match.group(0)
        if isinstance(found, bool):
            return "1" if found else ""
        return "" if found is None else str(found)

    return _BATCH_REF.sub(_sub, value)
