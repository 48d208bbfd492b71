"""Fake SMS carriers: real HTTP servers on 127.0.0.1 speaking the subset of each wire protocol we use.

Each fake runs a stdlib `ThreadingHTTPServer` in a daemon thread, started by the constructor and
stopped by `close()` (or use it as a context manager). No Django.

Common controls (thread-safe):

* `.base_url` -- point a carrier at it.
* `.messages` -- what was sent (`FakeMessage`: id, to, body, sender, status, ...), in order.
* `.set_status(id, raw)` / `.deliver_all()` -- move messages along, in the carrier's own vocabulary.
* `.down = True` -- answer 503 with an HTML page; `.down = "reset"` -- close connections unanswered.
* `.fail_next(n, kind, endpoint=None, skip=0)` -- the next n requests (optionally only "send" or
  "status", optionally after `skip` good ones) get a carrier error; `kind` is a name from the fake's `FAILURES` or a raw carrier error code. Also
  "http_503", "http_500", "html" (200 with an HTML page) and "reset" for every fake.
* `.max_concurrent = N` -- more than N requests in flight get the carrier's rate-limit answer.
* `.response_delay = seconds` -- process the request, then wait before answering (read timeouts).
* `.request_count`, `.received` (every `FakeRequest`), `.requests_for(endpoint)`.
* `clock=` (every constructor) -- a `tests.fakes.clock.Clock`; every time-dependent rule reads it: message
  timestamps (`FakeMessage.created`, Twilio's `date_*`, SMSC's `last_timestamp`), SMSC's duplicate window
  and `response_delay`. The default runs in real time (read timeouts against a real client need that);
  with `Clock.manual()` a duplicate window only closes, and a delayed answer only comes, when the test
  calls `clock.advance(...)`.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from .clock import Clock

JSON = "application/json; charset=utf-8"
HTML_ERROR = b"<html><head><title>503 Service Unavailable</title></head><body><h1>503</h1></body></html>"


@dataclass(frozen=True)
class FakeRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    endpoint: str


@dataclass
class FakeMessage:
    id: str
    to: str
    body: str
    sender: str
    status: str
    error_code: str | None = None
    error_message: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def json(payload: Any, status: int = 200, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return Reply(status, json.dumps(payload, ensure_ascii=False).encode(), JSON, headers)


RESET = Reply(0, b"")  # sentinel: close the connection without answering


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        super().setup()
        # headers and body go out in separate writes: without this, Nagle + delayed ACK add ~40 ms
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.fake._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        url = urlsplit(self.path)
        params = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        if raw and "json" not in (self.headers.get("Content-Type") or ""):
            form = parse_qs(raw.decode("utf-8"), keep_blank_values=True)
            params.update({k: v[-1] for k, v in form.items()})
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.server.fake._handle(method, url.path, params, headers)
        if reply is RESET:
            self.close_connection = True
            return
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:  # the client gave up (read timeout)
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    fake: _FakeCarrier

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # broken pipes after client timeouts are expected


class _FakeCarrier:
    #: failure name -> raw carrier code (or a generic name handled by `_generic_failure`)
    FAILURES: ClassVar[dict[str, Any]] = {}

    def __init__(self, clock: Clock | None = None, *, mount: str | None = None) -> None:
        """``mount``: a base URL where another server answers for this carrier by calling :meth:`handle`
        (no server of its own is started then)."""
        self.clock = clock if clock is not None else Clock()
        self._lock = threading.RLock()
        self._messages: list[FakeMessage] = []
        self._by_id: dict[str, list[FakeMessage]] = {}  # messages per id: a lookup is O(1), not a scan of all
        self._failures: list[list[Any]] = []  # [remaining, kind, endpoint, skip]
        self._conns: set[socket.socket] = set()
        self._inflight = 0
        self.received: list[FakeRequest] = []
        self.down: bool | str = False
        self.max_concurrent: int | None = None
        self.response_delay: float = 0.0
        self._server: _Server | None = None
        if mount is not None:
            self.base_url = mount.rstrip("/")
            return
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.fake = self
        host, port = self._server.server_address[:2]
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:  # also drop kept-alive connections, or pooled clients could still reach us
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)

    def __enter__(self) -> _FakeCarrier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    # -- controls ---------------------------------------------------------------------------------

    @property
    def messages(self) -> list[FakeMessage]:
        with self._lock:
            return [replace(m, extra=dict(m.extra)) for m in self._messages]

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.received)

    def requests_for(self, endpoint: str) -> list[FakeRequest]:
        with self._lock:
            return [r for r in self.received if r.endpoint == endpoint]

    def fail_next(self, n: int, kind: str | int, endpoint: str | None = None, *, skip: int = 0) -> None:
        """The next `n` requests (to `endpoint`, if given) fail with `kind`, after `skip` pass."""
        with self._lock:
            self._failures.append([n, kind, endpoint, skip])

    def set_status(self, message_id: str, raw: str | int, **fields: Any) -> None:
        with self._lock:
            found = [m for m in self._messages if self._matches(m, message_id)]
            if not found:
                raise KeyError(message_id)
            for m in found:
                m.status = str(raw)
                for key, value in fields.items():
                    setattr(m, key, value)

    def deliver_all(self) -> None:
        with self._lock:
            for m in self._messages:
                m.status = self.DELIVERED

    DELIVERED: ClassVar[str] = "delivered"

    def _matches(self, message: FakeMessage, message_id: str) -> bool:
        return message.id == message_id

    def _find(self, message_id: str) -> FakeMessage | None:
        """The newest message with that id (as carriers show the last one); `_matches` decides the rest."""
        with self._lock:
            for m in reversed(self._by_id.get(message_id.partition(":")[0], ())):
                if self._matches(m, message_id):
                    return m
        return None

    def _add(self, message: FakeMessage) -> FakeMessage:
        message.created = self.clock.now()
        with self._lock:
            self._messages.append(message)
            self._by_id.setdefault(message.id, []).append(message)
        return message

    # -- request handling -------------------------------------------------------------------------

    def _endpoint(self, path: str) -> str:
        raise NotImplementedError

    def _route(self, req: FakeRequest) -> Reply:
        raise NotImplementedError

    def _failure(self, kind: Any, req: FakeRequest) -> Reply:
        raise NotImplementedError

    def _rate_limited(self, req: FakeRequest) -> Reply:
        raise NotImplementedError

    def _generic_failure(self, kind: Any) -> Reply | None:
        if kind == "reset":
            return RESET
        if kind == "http_503":
            return Reply(503, HTML_ERROR, "text/html")
        if kind == "http_500":
            return Reply(500, b"<html><body>Internal Server Error</body></html>", "text/html")
        if kind == "html":
            return Reply(200, b"<html><body>Maintenance</body></html>", "text/html")
        return None

    def _take_failure(self, endpoint: str) -> Any:
        for entry in self._failures:
            remaining, kind, only, skip = entry
            if remaining <= 0 or (only is not None and only != endpoint):
                continue
            if skip > 0:
                entry[3] -= 1
                return None
            entry[0] -= 1
            self._failures = [e for e in self._failures if e[0] > 0]
            return kind
        return None

    def handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        """Answer one request (path below the base URL, query and form merged) as the carrier's server would.
        ``RESET`` means: drop the connection unanswered."""
        return self._handle(method, path, params, headers)

    def _handle(self, method: str, path: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        req = FakeRequest(method, path, params, headers, self._endpoint(path))
        with self._lock:
            self.received.append(req)
            down = self.down
            failure = None if down else self._take_failure(req.endpoint)
            self._inflight += 1
            over_limit = self.max_concurrent is not None and self._inflight > self.max_concurrent
            delay = self.response_delay
        try:
            if down:
                return RESET if down == "reset" else Reply(503, HTML_ERROR, "text/html")
            if failure is not None:
                return self._generic_failure(failure) or self._failure(failure, req)
            if over_limit:
                return self._rate_limited(req)
            reply = self._route(req)
            if delay:
                self.clock.sleep(delay)  # the request took effect; only the answer is late
            return reply
        finally:
            with self._lock:
                self._inflight -= 1


# ---------------------------------------------------------------------------------------------------
# Twilio


class FakeTwilio(_FakeCarrier):
    """`POST /2010-04-01/Accounts/{AC}/Messages.json` and `GET .../Messages/{SM}.json`, Basic auth."""

    ACCOUNT_SID: ClassVar[str] = "AC" + "0" * 31 + "1"
    AUTH_TOKEN: ClassVar[str] = "f" * 32
    FAILURES: ClassVar[dict[str, Any]] = {
        "auth": (401, 20003, "Authentication Error - invalid username"),
        "not_found": (404, 20404, "The requested resource was not found"),
        "invalid_to": (400, 21211, "The 'To' number is not a valid phone number."),
        "region": (400, 21408, "Permission to send an SMS has not been enabled for the region"),
        "unsubscribed": (400, 21610, "Attempt to send to unsubscribed recipient"),
        "rate_limit": (429, 20429, "Too Many Requests"),
        "server_error": (500, 20500, "Internal Server Error"),
        "unavailable": (503, 20503, "Service Unavailable"),
    }
    _CREATE = re.compile(r"^/2010-04-01/Accounts/(?P<ac>AC\w+)/Messages\.json$")
    _FETCH = re.compile(r"^/2010-04-01/Accounts/(?P<ac>AC\w+)/Messages/(?P<sm>\w+)\.json$")

    def __init__(
        self,
        account_sid: str = ACCOUNT_SID,
        auth_token: str = AUTH_TOKEN,
        *,
        retry_after: int | None = 1,
        clock: Clock | None = None,
    ) -> None:
        self.account_sid = account_sid
        self.auth_token = auth_token
        #: Retry-After seconds sent with 429 answers (None: no header)
        self.retry_after = retry_after
        super().__init__(clock)

    @property
    def credentials(self) -> dict[str, str]:
        return {"account_sid": self.account_sid, "auth_token": self.auth_token}

    def _endpoint(self, path: str) -> str:
        if self._CREATE.match(path):
            return "send"
        if self._FETCH.match(path):
            return "status"
        return "other"

    @staticmethod
    def _error(status: int, code: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> Reply:
        return Reply.json(
            {
                "code": code,
                "message": message,
                "more_info": f"https://www.twilio.com/docs/errors/{code}",
                "status": status,
            },
            status,
            headers,
        )

    def _failure(self, kind: Any, req: FakeRequest) -> Reply:
        if kind == "rate_limit":
            return self._rate_limited(req)
        if isinstance(kind, int):
            return self._error(400, kind, f"Error {kind}")
        status, code, message = self.FAILURES[kind]
        return self._error(status, code, message)

    def _rate_limited(self, req: FakeRequest) -> Reply:
        headers = (("Retry-After", str(self.retry_after)),) if self.retry_after is not None else ()
        return self._error(429, 20429, "Too Many Requests", headers)

    def _authorized(self, req: FakeRequest, account: str) -> bool:
        auth = req.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        return user == self.account_sid == account and password == self.auth_token

    def _resource(self, m: FakeMessage) -> dict[str, Any]:
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{m.id}.json"
        return {
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": m.body,
            "date_created": formatdate(m.created, usegmt=True),
            "date_sent": None if m.status in ("queued", "accepted") else formatdate(m.created, usegmt=True),
            "date_updated": formatdate(self.clock.now(), usegmt=True),
            "direction": "outbound-api",
            "error_code": int(m.error_code) if m.error_code else None,
            "error_message": m.error_message,
            "from": m.sender if not m.sender.startswith("MG") else None,
            "messaging_service_sid": m.sender if m.sender.startswith("MG") else None,
            "num_media": "0",
            "num_segments": "1",
            "price": m.extra.get("price"),
            "price_unit": "USD",
            "sid": m.id,
            "status": m.status,
            "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
            "to": m.to,
            "uri": uri,
        }

    def _route(self, req: FakeRequest) -> Reply:
        create, fetch = self._CREATE.match(req.path), self._FETCH.match(req.path)
        match = create or fetch
        if match is None:
            return self._error(404, 20404, f"The requested resource {req.path} was not found")
        if not self._authorized(req, match["ac"]):
            return self._error(401, 20003, "Authentication Error - invalid username")
        if create and req.method == "POST":
            return self._create(req)
        if fetch and req.method == "GET":
            m = self._find(fetch["sm"])
            if m is None:
                return self._error(404, 20404, f"The requested resource {req.path} was not found")
            return Reply.json(self._resource(m))
        return self._error(405, 20004, "Method not allowed")

    def _create(self, req: FakeRequest) -> Reply:
        to = req.params.get("To", "")
        sender = req.params.get("From") or req.params.get("MessagingServiceSid") or ""
        body = req.params.get("Body", "")
        if not re.fullmatch(r"\+[1-9]\d{6,14}", to):
            return self._error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
        if not sender:
            return self._error(400, 21603, "A 'From' phone number is required.")
        if not body:
            return self._error(400, 21602, "Message body is required.")
        extra = {}
        if "StatusCallback" in req.params:
            extra["status_callback"] = req.params["StatusCallback"]
        status = "accepted" if sender.startswith("MG") else "queued"
        m = self._add(FakeMessage("SM" + secrets.token_hex(16), to, body, sender, status, extra=extra))
        return Reply.json(self._resource(m), 201)


# ---------------------------------------------------------------------------------------------------
# SMS.ru

SMSRU_TEXTS: dict[int, str] = {
    -1: "Сообщение не найдено",
    100: "Сообщение находится в нашей очереди",
    101: "Сообщение передается оператору",
    102: "Сообщение отправлено (в пути)",
    103: "Сообщение доставлено",
    104: "Не может быть доставлено: время жизни истекло",
    105: "Не может быть доставлено: удалено оператором",
    106: "Не может быть доставлено: сбой в телефоне",
    107: "Не может быть доставлено: неизвестная причина",
    108: "Не может быть доставлено: отклонено",
    110: "Сообщение прочитано",
    150: "Не может быть доставлено: не найден маршрут на данный номер",
    200: "Неправильный api_id",
    201: "Не хватает средств на лицевом счету",
    202: "Неправильно указан номер телефона получателя, либо на него нет маршрута",
    207: "На этот номер нет маршрута для доставки сообщений",
    209: "Вы добавили этот номер (или один из номеров) в стоп-лист",
    211: "Метод не найден",
    220: "Сервис временно недоступен, попробуйте чуть позже",
    230: "Превышен общий лимит количества сообщений на этот номер в день",
    231: "Превышен лимит одинаковых сообщений на этот номер в минуту",
    232: "Превышен лимит одинаковых сообщений на этот номер в день",
    500: "Ошибка на сервере. Повторите запрос.",
}


class FakeSmsRu(_FakeCarrier):
    """`/sms/send` and `/sms/status` with `json=1` (GET or POST). Always HTTP 200, like SMS.ru."""

    API_ID: ClassVar[str] = "00000000-0000-0000-0000-000000000001"
    DELIVERED: ClassVar[str] = "103"
    FAILURES: ClassVar[dict[str, Any]] = {
        "bad_api_id": 200,
        "no_funds": 201,
        "bad_number": 202,
        "no_route": 207,
        "stop_list": 209,
        "unavailable": 220,
        "daily_limit": 230,
        "duplicate": 231,
        "server_error": 500,
    }
    #: on send these are reported in the recipient's entry, not for the whole request
    PER_NUMBER: ClassVar[frozenset[int]] = frozenset({202, 207, 209, 230, 231, 232})

    def __init__(self, api_id: str = API_ID, *, balance: float = 100.0, clock: Clock | None = None,
                 mount: str | None = None) -> None:
        self.api_id = api_id
        self.balance = balance
        self._ids = itertools.count(1)
        super().__init__(clock, mount=mount)

    @property
    def credentials(self) -> dict[str, str]:
        return {"api_id": self.api_id}

    def _endpoint(self, path: str) -> str:
        return {"/sms/send": "send", "/sms/status": "status"}.get(path, "other")

    @staticmethod
    def _top_error(code: int) -> Reply:
        return Reply.json({"status": "ERROR", "status_code": code, "status_text": SMSRU_TEXTS.get(code, "")})

    def _failure(self, kind: Any, req: FakeRequest) -> Reply:
        code = int(self.FAILURES.get(kind, kind))
        if req.endpoint == "send" and code in self.PER_NUMBER:
            number = req.params.get("to", "")
            entry = {"status": "ERROR", "status_code": code, "status_text": SMSRU_TEXTS.get(code, "")}
            return Reply.json(
                {"status": "OK", "status_code": 100, "sms": {number: entry}, "balance": self.balance}
            )
        return self._top_error(code)

    def _rate_limited(self, req: FakeRequest) -> Reply:
        return self._top_error(220)

    def _route(self, req: FakeRequest) -> Reply:
        if req.endpoint == "other":
            return self._top_error(211)
        if req.params.get("api_id") != self.api_id:
            return self._top_error(200)
        if req.endpoint == "send":
            return self._send(req)
        return self._status(req)

    def _send(self, req: FakeRequest) -> Reply:
        body = req.params.get("msg", "")
        entries: dict[str, Any] = {}
        for number in filter(None, req.params.get("to", "").split(",")):
            if not re.fullmatch(r"\d{10,15}", number):
                entries[number] = {"status": "ERROR", "status_code": 202, "status_text": SMSRU_TEXTS[202]}
                continue
            n = next(self._ids)
            sms_id = f"{n // 10_000_000:06d}-{10_000_000 + n % 10_000_000}"
            extra = {"test": req.params["test"]} if "test" in req.params else {}
            self._add(FakeMessage(sms_id, number, body, req.params.get("from", ""), "100", extra=extra))
            with self._lock:
                self.balance = round(self.balance - 0.5, 2)
            entries[number] = {"status": "OK", "status_code": 100, "sms_id": sms_id}
        return Reply.json({"status": "OK", "status_code": 100, "sms": entries, "balance": self.balance})

    def _status(self, req: FakeRequest) -> Reply:
        entries: dict[str, Any] = {}
        for sms_id in filter(None, req.params.get("sms_id", "").split(",")):
            m = self._find(sms_id)
            code = int(m.status) if m else -1
            if m is None or code == -1:
                entries[sms_id] = {"status": "ERROR", "status_code": -1, "status_text": SMSRU_TEXTS[-1]}
            else:
                entries[sms_id] = {
                    "status": "OK",
                    "status_code": code,
                    "cost": 0.5,
                    "status_text": SMSRU_TEXTS.get(code, ""),
                }
        return Reply.json({"status": "OK", "status_code": 100, "sms": entries, "balance": self.balance})


# ---------------------------------------------------------------------------------------------------
# SMSC


class FakeSmsc(_FakeCarrier):
    """`/sys/send.php` and `/sys/status.php` with `fmt=3` (GET or POST). Always HTTP 200.

    Message ids are SMSC's: the client `id` when given, else a counter; statuses are looked up by id
    and phone (`set_status` takes "id" or "id:phone"). Identical send requests within
    `duplicate_window` seconds are refused with error 9, as SMSC does."""

    LOGIN: ClassVar[str] = "demo"
    PASSWORD: ClassVar[str] = "secret"
    DELIVERED: ClassVar[str] = "1"
    FAILURES: ClassVar[dict[str, Any]] = {
        "params": (1, "parameters error"),
        "auth": (2, "authorise error"),
        "no_funds": (3, "no money"),
        "ip_blocked": (4, "IP is blocked"),
        "forbidden": (6, "message is denied"),
        "bad_phone": (7, "invalid number"),
        "undeliverable": (8, "can't deliver"),
        "too_frequent": (9, "duplicate request, wait a minute"),
    }

    def __init__(
        self,
        login: str = LOGIN,
        password: str = PASSWORD,
        *,
        apikey: str | None = None,
        duplicate_window: float = 60.0,
        balance: float = 100.0,
        clock: Clock | None = None,
    ) -> None:
        self.login = login
        self.password = password
        self.apikey = apikey
        self.duplicate_window = duplicate_window
        self.balance = balance
        self._ids = itertools.count(1000)
        self._recent_sends: dict[tuple[str, ...], float] = {}
        super().__init__(clock)

    @property
    def credentials(self) -> dict[str, str]:
        return {"login": self.login, "password": self.password}

    def _endpoint(self, path: str) -> str:
        return {"/sys/send.php": "send", "/sys/status.php": "status"}.get(path, "other")

    def _matches(self, message: FakeMessage, message_id: str) -> bool:
        sms_id, _, phone = message_id.partition(":")
        return message.id == sms_id and (not phone or message.to == phone)

    @staticmethod
    def _error(code: int, text: str, sms_id: str | None = None) -> Reply:
        payload: dict[str, Any] = {"error": text, "error_code": code}
        if sms_id is not None and code in (3, 6, 7, 8):
            payload["id"] = int(sms_id) if sms_id.isdigit() else sms_id
        return Reply.json(payload)

    def _failure(self, kind: Any, req: FakeRequest) -> Reply:
        if isinstance(kind, int):
            return self._error(kind, f"error {kind}", req.params.get("id"))
        code, text = self.FAILURES[kind]
        return self._error(code, text, req.params.get("id"))

    def _rate_limited(self, req: FakeRequest) -> Reply:
        return self._error(9, "too many concurrent requests")

    def _authorized(self, req: FakeRequest) -> bool:
        if self.apikey is not None and req.params.get("apikey") == self.apikey:
            return True
        return req.params.get("login") == self.login and req.params.get("psw") == self.password

    def _route(self, req: FakeRequest) -> Reply:
        if req.endpoint == "other":
            return Reply(404, b"<html>Not Found</html>", "text/html")
        if not self._authorized(req):
            return self._error(2, "authorise error")
        if req.endpoint == "send":
            return self._send(req)
        return self._status(req)

    def _send(self, req: FakeRequest) -> Reply:
        p = req.params
        key = tuple(p.get(k, "") for k in ("phones", "mes", "sender", "id", "login", "apikey"))
        now = self.clock.now()
        with self._lock:
            seen = self._recent_sends.get(key)
            self._recent_sends[key] = now
        if seen is not None and now - seen < self.duplicate_window:
            return self._error(9, "duplicate request, wait a minute")
        sms_id = p.get("id") or str(next(self._ids))
        phones = [x.lstrip("+") for x in re.split(r"[,;]", p.get("phones", "")) if x.strip()]
        if not phones or not all(re.fullmatch(r"\d{7,15}", x) for x in phones):
            return self._error(7, "invalid number", sms_id)
        if not p.get("mes"):
            return self._error(1, "parameters error")
        for phone in phones:
            self._add(FakeMessage(sms_id, phone, p["mes"], p.get("sender", ""), "-1", extra=dict(p)))
        answer: dict[str, Any] = {"id": int(sms_id) if sms_id.isdigit() else sms_id, "cnt": len(phones)}
        if p.get("cost") in ("2", "3"):
            with self._lock:
                self.balance = round(self.balance - 1.5 * len(phones), 2)
            answer.update(cost=f"{1.5 * len(phones):.2f}", balance=f"{self.balance:.2f}")
        return Reply.json(answer)

    def _item(self, sms_id: str, phone: str) -> dict[str, Any]:
        m = self._find(f"{sms_id}:{phone}")
        ts = int(m.created if m else self.clock.now())
        return {
            "status": int(m.status) if m else -3,
            "last_date": time.strftime("%d.%m.%Y %H:%M:%S", time.localtime(ts)),
            "last_timestamp": ts,
            "flag": 0,
            "err": int(m.error_code) if m and m.error_code else 0,
        }

    def _status(self, req: FakeRequest) -> Reply:
        raw_ids, raw_phones = req.params.get("id", ""), req.params.get("phone", "")
        if "," not in raw_ids:  # single-message format
            return Reply.json(self._item(raw_ids, raw_phones.lstrip("+")))
        ids = [x for x in raw_ids.split(",") if x]
        phones = [x.lstrip("+") for x in raw_phones.split(",") if x]
        if len(ids) != len(phones):
            return self._error(1, "parameters error")
        items = [
            {**self._item(i, ph), "id": int(i) if i.isdigit() else i, "phone": ph}
            for i, ph in zip(ids, phones, strict=True)
        ]
        return Reply.json(items)


__all__: list[str] = ["FakeMessage", "FakeRequest", "FakeSmsRu", "FakeSmsc", "FakeTwilio"]
