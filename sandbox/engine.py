"""The sandbox Bitrix24: one emulated cloud, portal and SMS carrier, kept in the web process's memory.

Everything is the test emulation (sandbox.emulation), mounted on this service's own address so that our
workers reach it over real HTTP like a real portal: the portal's REST at ``PUBLIC_URL/rest/``, the OAuth
server at ``PUBLIC_URL/sandbox/oauth/token/`` (+ ``/sandbox/rest/app.info``), the carrier (SMS.ru's protocol)
at ``PUBLIC_URL/sandbox/carrier/smsru/``. What the sandbox adds is the part a person plays in Bitrix24:
opening frames, pressing "Send SMS" on a card (which POSTs our handler as Bitrix24 does), uninstalling,
and a log of every exchange with b24portal (secrets masked).

State lives as long as the process (``make run``'s single web process); :func:`reset` starts over.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from django.conf import settings

from .emulation import (
    RESET,
    FakeBitrix24Cloud,
    FakePortal,
    FakeSmsRu,
    HttpAnswer,
    Reply,
    b24_crm,
    b24_messageservice,
    b24_placements,
)

LOG_SIZE = 500
ANSWER_PREVIEW = 2000  # characters of an answer kept in the log
POST_TIMEOUT = 15.0  # seconds for the sandbox's own POSTs to b24portal (events, SMS handler)
# Keys whose values are secrets wherever they appear (tokens, client secret, carrier key).
SECRET_KEYS = frozenset({"auth", "access_token", "refresh_token", "client_secret", "application_token",
                         "auth_id", "refresh_id", "api_id", "password", "member_id"})
# CRM entities the sandbox shows; OWNER_TYPE_ID as Bitrix24 numbers them.
ENTITIES: dict[str, dict[str, Any]] = {
    "contact": {"owner_type": 3, "title": "Contacts", "one": "Contact"},
    "lead": {"owner_type": 1, "title": "Leads", "one": "Lead"},
    "deal": {"owner_type": 2, "title": "Deals", "one": "Deal"},
}
# The SMS.ru status codes the sandbox carrier walks a message through, one step per status query.
CARRIER_STEPS = {"100": "102", "101": "102", "102": "103"}


def mask(value: Any, key: str = "") -> Any:
    """A copy of ``value`` fit for the log: secret values cut to their first 4 characters."""
    leaf = key.rsplit("[", 1)[-1].rstrip("]").lower()  # "auth[access_token]" (a flattened form key)
    if leaf in SECRET_KEYS and not isinstance(value, Mapping | list | tuple):
        text = "" if value is None else str(value)
        return f"{text[:4]}…" if len(text) > 4 else "…"
    if isinstance(value, Mapping):
        return {str(k): mask(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [mask(v) for v in value]
    return value


def _decode(body: bytes, content_type: str) -> Any:
    """Params of a request body for the log (JSON or a form; nested keys are left as written)."""
    if not body:
        return {}
    text = body.decode("utf-8", "replace")
    if "json" in content_type:
        try:
            return json.loads(text)
        except ValueError:
            return text[:ANSWER_PREVIEW]
    return dict(parse_qsl(text, keep_blank_values=True))


def _preview(body: bytes | str) -> Any:
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        return mask(json.loads(text))
    except ValueError:
        return text[:ANSWER_PREVIEW]


@dataclass
class LogEntry:
    id: int
    at: float
    direction: str  # "in": b24portal called the sandbox; "out": the sandbox called b24portal
    kind: str  # rest, oauth, event, handler, frame, carrier
    method: str
    params: Any
    status: int | str
    answer: Any
    duration_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "direction": self.direction, "kind": self.kind,
                "method": self.method, "params": self.params, "status": self.status, "answer": self.answer,
                "duration_ms": self.duration_ms}


@dataclass
class CardMessage:
    """An SMS sent from a CRM card through the sandbox's message service (Bitrix24 made its message_id)."""

    message_id: str
    entity: str
    item_id: int
    to: str
    body: str
    sender: str
    at: float
    handler_status: int | str = ""
    handler_answer: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)


class Sandbox:
    """One sandbox Bitrix24 (cloud + portal + carrier) on ``public_url``."""

    def __init__(self, public_url: str, client_id: str, client_secret: str) -> None:
        self.public_url = public_url.rstrip("/")
        self.cloud = FakeBitrix24Cloud(client_id=client_id, client_secret=client_secret,
                                       mount=f"{self.public_url}/sandbox")
        # every method the product uses, as the tests' session cloud has them (tests/conftest.py)
        b24_placements.install(self.cloud)
        b24_crm.install(self.cloud)
        self.portal: FakePortal = b24_messageservice.install_messageservice(
            self.cloud.create_portal(mount=self.public_url, license="en_pro"))
        self.carrier = FakeSmsRu(mount=f"{self.public_url}/sandbox/carrier/smsru")
        self.lock = threading.RLock()
        self.log: deque[LogEntry] = deque(maxlen=LOG_SIZE)
        self._ids = itertools.count(1)
        self.card_messages: dict[str, CardMessage] = {}
        self.field_values: dict[tuple[str, int], str] = {}
        self.started_at = time.time()
        self._seed()

    # -- seed data ------------------------------------------------------------------------------------

    def _seed(self) -> None:
        add = b24_placements.add_crm_item
        portal = self.portal
        ivan = add(portal, "contact", {"NAME": "Ivan", "LAST_NAME": "Petrov"}, phones=["+79991234567"])
        anna = add(portal, "contact", {"NAME": "Anna", "LAST_NAME": "Schmidt"}, phones=["+4915112345678"])
        add(portal, "contact", {"NAME": "John", "LAST_NAME": "Miller"}, phones=["+14155550123", "+14155550188"])
        add(portal, "contact", {"NAME": "Maria", "LAST_NAME": "Garcia"}, phones=["+34612345678"])
        add(portal, "lead", {"TITLE": "Website enquiry", "NAME": "Olga", "LAST_NAME": "Ivanova"},
            phones=["+79035556677"])
        add(portal, "lead", {"TITLE": "Call back request", "NAME": "Tom", "LAST_NAME": "Baker"},
            phones=["+447700900123"])
        add(portal, "deal", {"TITLE": "Office chairs, 12 pcs", "CONTACT_ID": ivan})
        add(portal, "deal", {"TITLE": "Annual support contract", "CONTACT_ID": anna})

    # -- what a person sees -----------------------------------------------------------------------------

    @property
    def member_id(self) -> str:
        return self.portal.member_id

    @property
    def domain(self) -> str:
        return self.portal.domain

    @property
    def installed(self) -> bool:
        return bool(self.portal.installed)

    @property
    def uninstalled(self) -> bool:
        return bool(self.portal.uninstalled)

    def items(self, entity: str) -> list[dict[str, Any]]:
        with self.portal.lock:
            rows = b24_placements.state(self.portal)["items"][entity]
            return [dict(row) for _id, row in sorted(rows.items())]

    def item(self, entity: str, item_id: int) -> dict[str, Any] | None:
        with self.portal.lock:
            row = b24_placements.state(self.portal)["items"][entity].get(item_id)
            return dict(row) if row is not None else None

    def phones(self, entity: str, item_id: int) -> list[str]:
        """The item's phones; a deal's come from its contact (as our widget reads them)."""
        row = self.item(entity, item_id) or {}
        if entity == "deal" and row.get("CONTACT_ID"):
            return self.phones("contact", int(row["CONTACT_ID"]))
        return [str(p.get("VALUE")) for p in row.get("PHONE") or [] if p.get("VALUE")]

    def placements(self, code: str | None = None) -> list[dict[str, Any]]:
        return [p for p in b24_placements.placements(self.portal) if code in (None, p["placement"])]

    def list_menu(self, entity: str) -> list[dict[str, Any]]:
        return self.placements(f"CRM_{entity.upper()}_LIST_MENU")

    def consent_field(self, entity: str) -> dict[str, Any] | None:
        """Our field on this entity (a field of one of our userfield types), if the app added one."""
        types = {f"rest_{self.portal.app_id}_{t['USER_TYPE_ID']}": t for t in b24_placements.userfield_types(self.portal)}
        if entity not in b24_placements.USERFIELD_ENTITIES:
            return None
        for row in b24_placements.userfields(self.portal, entity):
            if row["USER_TYPE_ID"] in types:
                return {**row, "HANDLER": types[row["USER_TYPE_ID"]]["HANDLER"],
                        "TITLE": types[row["USER_TYPE_ID"]]["TITLE"]}
        return None

    def senders(self) -> dict[str, dict[str, Any]]:
        return b24_messageservice.senders(self.portal)

    def event_bindings(self) -> list[dict[str, Any]]:
        with self.portal.lock:
            return [b.as_result() for b in self.portal.event_bindings]

    def registered(self) -> dict[str, Any]:
        """What the app registered in this portal (for the Applications page)."""
        fields = {e: self.consent_field(e) for e in ENTITIES}
        return {"installed": self.installed, "uninstalled": self.uninstalled, "version": self.portal.version,
                "events": [f"{b['event']} → {b['handler']}" for b in self.event_bindings()],
                "placements": [f"{p['placement']} “{p['title']}”" for p in self.placements()],
                "field_types": [f"{t['USER_TYPE_ID']} → {t['HANDLER']}" for t in
                                b24_placements.userfield_types(self.portal)],
                "fields": [f"{f['ENTITY_ID']}.{f['FIELD_NAME']}" for f in fields.values() if f],
                "senders": [f"{code} “{_name(s['NAME'])}” → {s['HANDLER']}" for code, s in self.senders().items()]}

    # -- frames (what Bitrix24 POSTs into an iframe) ------------------------------------------------------

    def install_frame(self) -> dict[str, Any]:
        """The install frame (PLACEMENT=DEFAULT on first open); a removed app is installed again."""
        with self.portal.lock:
            if self.portal.uninstalled:
                self.portal.reinstall()
        query, form = self.portal.install_frame(user_id=1)
        return self._frame("install", f"{self.public_url}/b24/install/", query, form)

    def app_frame(self) -> dict[str, Any]:
        query, form = self.portal.install_frame(user_id=1)
        return self._frame("app", f"{self.public_url}/b24/app/", query, form)

    def placement_frame(self, code: str, options: Mapping[str, Any]) -> dict[str, Any] | None:
        bound = self.placements(code)
        if not bound:
            return None
        query, form = self.portal.placement_frame(code, options, user_id=1)
        return self._frame("placement", bound[0]["handler"], query, form)

    def field_frame(self, entity: str, item_id: int, mode: str) -> dict[str, Any] | None:
        consent = self.consent_field(entity)
        if consent is None:
            return None
        options = {"MODE": mode, "ENTITY_ID": consent["ENTITY_ID"], "FIELD_NAME": consent["FIELD_NAME"],
                   "ENTITY_VALUE_ID": str(item_id), "VALUE": self.field_values.get((entity, item_id)),
                   "MULTIPLE": consent["MULTIPLE"], "MANDATORY": consent["MANDATORY"], "XML_ID": consent["XML_ID"]}
        query, form = self.portal.placement_frame("USERFIELD_TYPE", options, user_id=1)
        return self._frame("field", consent["HANDLER"], query, form)

    def _frame(self, kind: str, handler: str, query: Mapping[str, str], form: Mapping[str, str]) -> dict[str, Any]:
        action = f"{handler}{'&' if '?' in handler else '?'}{urlencode(query)}"
        self.record("out", "frame", f"{kind}: {form.get('PLACEMENT', 'DEFAULT')}",
                    {"url": handler, "query": dict(query), "form": mask(dict(form))}, "opened in an iframe", None)
        return {"action": action, "fields": dict(form)}

    # -- what the BX24 SDK tells the portal -----------------------------------------------------------------

    def finish_install(self) -> bool:
        """``BX24.installFinish()``: the app counts as installed from now on. True the first time."""
        with self.portal.lock:
            first = not self.portal.installed and not self.portal.uninstalled
            self.portal.finish_install()
        self.record("in", "frame", "BX24.installFinish", {}, "INSTALLED = true", None)
        return first

    def set_field_value(self, entity: str, item_id: int, value: str) -> None:
        with self.lock:
            self.field_values[(entity, item_id)] = value[:1000]
        self.record("in", "frame", "BX24.placement.call setValue", {"entity": entity, "id": item_id,
                                                                     "value": value[:200]}, "saved", None)

    # -- the portal's messages service ------------------------------------------------------------------

    def send_sms(self, entity: str, item_id: int, phone: str, body: str) -> CardMessage:
        """Send from a CRM card as Bitrix24 does: the message gets an id and our sender's HANDLER is POSTed."""
        senders = self.senders()
        if not senders:
            raise LookupError("no SMS provider is registered yet: install b24portal first")
        code, sender = next(iter(senders.items()))
        payload = b24_messageservice.send_from_bitrix24(
            self.portal, code, phone, body, bindings=[(ENTITIES[entity]["owner_type"], item_id)], author_id=1)
        message = CardMessage(payload["message_id"], entity, item_id, phone, body, code, time.time())
        with self.lock:
            self.card_messages[message.message_id] = message
        status, answer = self._post("handler", f"messageservice handler ({code})", sender["HANDLER"], payload)
        message.handler_status, message.handler_answer = status, answer
        return message

    def timeline(self, entity: str, item_id: int) -> list[dict[str, Any]]:
        """Comments our app wrote plus card SMS with the statuses our app pushed, newest first."""
        rows: list[dict[str, Any]] = []
        for comment in b24_placements.timeline(self.portal):
            if comment["ENTITY_TYPE"] == entity and int(comment["ENTITY_ID"]) == item_id:
                rows.append({"kind": "comment", "id": f"c{comment['ID']}", "text": comment["COMMENT"],
                             "author": comment["AUTHOR_ID"], "order": int(comment["ID"])})
        with self.lock:
            messages = [m for m in self.card_messages.values() if m.entity == entity and m.item_id == item_id]
        for m in messages:
            updates = b24_messageservice.status_updates(self.portal, m.message_id)
            status = b24_messageservice.message_status(self.portal, m.message_id)
            accepted = m.handler_status == 200
            rows.append({"kind": "sms", "id": m.message_id, "to": m.to, "text": m.body, "sender": m.sender,
                         "status": status or ("accepted" if accepted else "refused"),
                         "handler_status": m.handler_status, "handler_answer": m.handler_answer,
                         "history": [{"status": u["STATUS"], "at": u["at"]} for u in updates],
                         "at": m.at, "order": 0})
        return sorted(rows, key=lambda r: (r.get("at") or 0, r["order"]), reverse=True)

    # -- lifecycle ------------------------------------------------------------------------------------------

    def uninstall(self) -> list[tuple[str, int | str]]:
        """Remove the app as Bitrix24 does: tokens revoked, handlers dropped, then ONAPPUNINSTALL POSTed
        (``data[CLEAN]=1``) to the handlers that were bound to it."""
        with self.portal.lock:
            handlers = [b.handler for b in self.portal.event_bindings if b.event == "ONAPPUNINSTALL" and not b.offline]
            if self.portal.uninstalled:
                return []
        payload = self.portal.onappuninstall(clean=True)
        return [(h, self._post("event", "ONAPPUNINSTALL", h, payload)[0]) for h in handlers]

    def update_app(self) -> list[tuple[str, int | str]]:
        """Publish a new app version as Bitrix24 does: VERSION + 1, a new application token, the app's event
        handlers, widgets and senders dropped, then ONAPPUPDATE POSTed to the handlers that were bound to it."""
        with self.portal.lock:
            handlers = [b.handler for b in self.portal.event_bindings if b.event == "ONAPPUPDATE" and not b.offline]
            if not self.portal.installed or self.portal.uninstalled:
                return []
        payload = self.portal.onappupdate()
        return [(h, self._post("event", "ONAPPUPDATE", h, payload)[0]) for h in handlers]

    def close(self) -> None:
        self.cloud.close()
        self.carrier.close()

    # -- the wire: b24portal → sandbox ------------------------------------------------------------------

    def rest(self, verb: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> HttpAnswer:
        return self._answer("rest", self.portal.dispatch, verb, path, query, headers, body)

    def oauth(self, verb: str, path: str, query: str, headers: Mapping[str, str], body: bytes) -> HttpAnswer:
        return self._answer("oauth", self.cloud.dispatch, verb, path, query, headers, body)

    def _answer(self, kind: str, dispatch: Callable[..., HttpAnswer], verb: str, path: str, query: str,
                headers: Mapping[str, str], body: bytes) -> HttpAnswer:
        start = time.monotonic()
        answer = dispatch(verb, path, query, headers, body)
        content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
        params = {**dict(parse_qsl(query, keep_blank_values=True)), **_as_dict(_decode(body, content_type))}
        method = path.rsplit("/rest/", 1)[-1].removesuffix(".json") if "/rest/" in path else path
        if method == "batch" and isinstance(params.get("cmd"), Mapping):
            names = [str(c).split("?", 1)[0] for c in params["cmd"].values()]
            method = f"batch: {', '.join(dict.fromkeys(names))}"
        self.record("in", kind, method, mask(params), answer.status, _preview(answer.body),
                    int((time.monotonic() - start) * 1000))
        return answer

    def carrier_request(self, verb: str, path: str, params: dict[str, str], headers: dict[str, str]) -> Reply:
        if path == "/sms/status":
            self._advance(params.get("sms_id", ""))
        start = time.monotonic()
        reply = self.carrier.handle(verb, path, params, headers)
        status: int | str = "reset" if reply is RESET else reply.status
        self.record("in", "carrier", f"SMS.ru {path}", mask(params), status, _preview(reply.body),
                    int((time.monotonic() - start) * 1000))
        return reply

    def _advance(self, ids: str) -> None:
        """The sandbox carrier moves each queried message one step: queued → sent → delivered."""
        wanted = set(filter(None, ids.split(",")))
        for message in self.carrier.messages:
            if message.id in wanted and message.status in CARRIER_STEPS:
                self.carrier.set_status(message.id, CARRIER_STEPS[message.status])

    # -- the wire: sandbox → b24portal ------------------------------------------------------------------

    def _post(self, kind: str, method: str, url: str, payload: Mapping[str, str]) -> tuple[int | str, Any]:
        start = time.monotonic()
        try:
            response = requests.post(url, data=dict(payload), timeout=POST_TIMEOUT, allow_redirects=False)
            status: int | str = response.status_code
            answer = _preview(response.content)
        except requests.RequestException as exc:
            status, answer = "error", f"{type(exc).__name__}: {exc}"[:300]
        self.record("out", kind, method, mask(dict(payload)) | {"url": url}, status, answer,
                    int((time.monotonic() - start) * 1000))
        return status, answer

    def record(self, direction: str, kind: str, method: str, params: Any, status: int | str, answer: Any,
               duration_ms: int = 0) -> None:
        with self.lock:
            self.log.append(LogEntry(next(self._ids), time.time(), direction, kind, method, params, status, answer,
                                     duration_ms))

    def log_entries(self, after: int = 0) -> list[LogEntry]:
        with self.lock:
            return [e for e in self.log if e.id > after]


def _name(value: Any) -> str:
    """A sender NAME may be a {lang: text} map."""
    if isinstance(value, Mapping):
        return str(next(iter(value.values()), ""))
    return str(value or "")


def _as_dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {"body": value}


_current: Sandbox | None = None
_current_lock = threading.Lock()


def current() -> Sandbox:
    """This process's sandbox, created on first use."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Sandbox(settings.PUBLIC_URL, settings.B24_CLIENT_ID, settings.B24_CLIENT_SECRET)
        return _current


def reset() -> Sandbox:
    """Start over: uninstall the app from the old sandbox (our side forgets it too), then a fresh one."""
    global _current
    with _current_lock:
        old, _current = _current, None
    if old is not None:
        old.uninstall()  # a no-op when nothing was bound yet
        old.close()
    return current()
