"""Bitrix24's offline events on a FakePortal: ``event.offline.get/clear/error/list`` and the queue they read.

    install_offline_events(fake_portal)        # registers the methods and the CRM change hook
    fake_portal.features["rest_offline_extended"] = "Y"; fake_portal.features["rest_auth_connector"] = "Y"
    record_change(fake_portal, "ONCRMLEADUPDATE", {"FIELDS": {"ID": 7}}, user_id=3)   # a person's edit
    queue(fake_portal)                         # the records as they stand (copies)

Semantics (api-reference/events/offline-events.md, event-offline-*.md; contracts §7):

* A change is recorded for every offline binding (``event.bind`` with ``event_type=offline``) of its event.
  The queue keeps the **latest state** per object: a record is keyed by ``MESSAGE_ID`` (the same for the
  same event and object), and a further change of an object whose record is still free (not taken by a
  process, not marked as an error) only moves that record's ``TIMESTAMP_X`` on. A change of an object
  whose record is taken gets a new record, so nothing that happened after a read is lost.
* ``auth_connector``: a binding made with one (when the portal has ``rest_auth_connector``) has a queue of
  its own, read with ``event.offline.get auth_connector=...``; a change made by a call that carried the same
  ``auth_connector`` is not recorded there (how an app keeps its own writes from echoing back). Without the
  feature the connector is ignored: one queue, every change recorded.
* ``event.offline.get``: ``clear=1`` (default) deletes what it returns; ``clear=0`` marks it with a
  ``process_id`` (the one passed, else a new one) and hides it from other callers, so parallel callers get
  different records; a caller passing its ``process_id`` again gets its own unacknowledged records back
  (plus free ones). ``error=1`` reads records marked as errors instead. ``filter`` (operator before the
  field: ``=``, ``!``, ``!=``, ``>``, ``>=``, ``<``, ``<=``), ``order`` (default ``TIMESTAMP_X`` ASC),
  ``limit`` (default 50).
* ``event.offline.clear``: ``process_id`` required; deletes that process's records, or only those in
  ``id`` (or, without ``id``, ``message_id``).
* ``event.offline.error``: ``process_id`` required; marks that process's records in ``message_id`` as
  errors and releases them from the process (``event.offline.get error=1`` reads them; a ``clear`` of the
  process no longer deletes them).
* ``event.offline.list``: read-only, pages of 50 by ``start``, ``filter`` also on ``PROCESS_ID``/``ERROR``,
  default order ``ID`` ASC, with ``total``.

Changes reach the queue through ``portal.ext["crm_change_hooks"]`` (the fake CRM calls every hook after a
lead add/update/delete with the call's params, so ``auth_connector`` is seen) or :func:`record_change`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from .bitrix24 import B24Error, CallContext, FakePortal, Paged, _iso, paginate
from .phpquery import listify

KEY = "offline_events"
HOOKS = "crm_change_hooks"
FILTER_FIELDS = ("ID", "TIMESTAMP_X", "EVENT_NAME", "MESSAGE_ID")
LIST_FILTER_FIELDS = (*FILTER_FIELDS, "PROCESS_ID", "ERROR")
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000
_OPERATORS = ("!=", ">=", "<=", "=", "!", ">", "<")  # longest first


def state(portal: FakePortal) -> dict[str, Any]:
    return portal.ext.setdefault(KEY, {"records": [], "next_id": 1})


def _feature(portal: FakePortal, code: str) -> bool:
    return str(portal.features.get(code, "N")).upper() in ("Y", "1", "TRUE")


def _param(params: Mapping[str, Any], name: str) -> Any:
    for key in (name, name.lower(), name.upper()):
        if key in params:
            return params[key]
    return None


def _connector(portal: FakePortal, value: Any) -> str:
    """The queue a binding or a call names: without `rest_auth_connector` there is only the default one."""
    return str(value or "").strip() if _feature(portal, "rest_auth_connector") else ""


def message_id(event_name: str, data: Any) -> str:
    """The same for the same event and object (what makes "latest state per object" work)."""
    return hashlib.md5(f"{event_name.upper()}|{json.dumps(data, sort_keys=True)}".encode()).hexdigest()


def record_change(portal: FakePortal, event_name: str, data: Any, *, params: Mapping[str, Any] | None = None,
                  user_id: int = 1) -> int:
    """Record one change in every offline queue bound to the event; returns how many queues got it."""
    event = event_name.upper()
    caller_connector = _connector(portal, _param(params or {}, "auth_connector"))
    recorded = 0
    with portal.lock:
        queues = {_connector(portal, b.auth_connector) for b in portal.event_bindings
                  if b.offline and b.event == event}
        for connector in sorted(queues):
            if connector and connector == caller_connector:
                continue  # the app's own write through this channel (offline-events.md, "avoid cycles")
            _upsert(portal, connector, event, data, user_id)
            recorded += 1
    return recorded


def _upsert(portal: FakePortal, connector: str, event: str, data: Any, user_id: int) -> None:
    st = state(portal)
    mid = message_id(event, data)
    now = portal.cloud.now()
    for record in st["records"]:
        if (record["CONNECTOR"], record["MESSAGE_ID"]) == (connector, mid) and not record["PROCESS_ID"] \
                and not record["ERROR"]:
            record["TIMESTAMP_X"] = now
            record["EVENT_ADDITIONAL"] = {"user_id": str(user_id)}
            return
    st["records"].append({"ID": st["next_id"], "TIMESTAMP_X": now, "EVENT_NAME": event, "EVENT_DATA": data,
                          "EVENT_ADDITIONAL": {"user_id": str(user_id)}, "MESSAGE_ID": mid, "PROCESS_ID": "",
                          "ERROR": 0, "CONNECTOR": connector})
    st["next_id"] += 1


def _crm_hook(portal: FakePortal, event_name: str, data: Any, params: Mapping[str, Any], ctx: CallContext) -> None:
    record_change(portal, event_name, data, params=params, user_id=ctx.user_id)


# -- filters and output -------------------------------------------------------------------------------


def _comparable(portal: FakePortal, field: str, value: Any) -> Any:
    if field in ("ID", "ERROR"):
        try:
            return int(value)
        except (TypeError, ValueError):
            raise B24Error("ERROR_ARGUMENT", f"Wrong value of {field}", 400) from None
    if field == "TIMESTAMP_X":
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return datetime.fromisoformat(str(value)).timestamp()
        except ValueError:
            raise B24Error("ERROR_ARGUMENT", "Wrong value of TIMESTAMP_X", 400) from None
    if field == "EVENT_NAME":
        return str(value).upper()
    return str(value)


def _matches(portal: FakePortal, record: dict[str, Any], flt: Any, fields: tuple[str, ...]) -> bool:
    if not flt:
        return True
    if not isinstance(flt, dict):
        raise B24Error("ERROR_ARGUMENT", "filter must be an object", 400)
    for key, wanted in flt.items():
        op = next((o for o in _OPERATORS if str(key).startswith(o)), "=")
        field = str(key)[len(op):].upper() if str(key).startswith(op) else str(key).upper()
        if field not in fields:
            raise B24Error("ERROR_ARGUMENT", f"Filter by {field} is not supported", 400)
        have = _comparable(portal, field, record[field])
        want = _comparable(portal, field, wanted)
        ok = {"=": have == want, "!": have != want, "!=": have != want, ">": have > want, ">=": have >= want,
              "<": have < want, "<=": have <= want}[op]
        if not ok:
            return False
    return True


def _ordered(records: list[dict[str, Any]], order: Any, default: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    spec = order if isinstance(order, dict) and order else {default: "ASC"}
    rows = sorted(records, key=lambda r: r["ID"])
    for field, direction in reversed(list(spec.items())):
        name = str(field).upper()
        if name not in fields:
            raise B24Error("ERROR_ARGUMENT", f"Order by {name} is not supported", 400)
        rows.sort(key=lambda r, n=name: r[n], reverse=str(direction).upper() == "DESC")
    return rows


def _row(portal: FakePortal, record: dict[str, Any], *, listing: bool = False) -> dict[str, Any]:
    row = {"ID": str(record["ID"]), "TIMESTAMP_X": _iso(record["TIMESTAMP_X"]), "EVENT_NAME": record["EVENT_NAME"],
           "EVENT_DATA": record["EVENT_DATA"], "EVENT_ADDITIONAL": record["EVENT_ADDITIONAL"],
           "MESSAGE_ID": record["MESSAGE_ID"], "PROCESS_ID": record["PROCESS_ID"]}
    if listing:
        row["ERROR"] = str(record["ERROR"])
    return row


def _flag(value: Any, default: int) -> int:
    if value is None or value == "":
        return default
    return 1 if str(value).strip().lower() in ("1", "y", "true") else 0


def _ids(value: Any) -> list[str]:
    value = listify(value)
    if value is None or value == "":
        return []
    if not isinstance(value, list):
        value = [value]
    return [str(v) for v in value]


def _require_process(params: Mapping[str, Any]) -> str:
    process_id = str(_param(params, "process_id") or "").strip()
    if not process_id:
        raise B24Error("ERROR_ARGUMENT", "Argument 'process_id' is null or empty", 400, argument="process_id")
    return process_id


# -- methods ------------------------------------------------------------------------------------------


def _offline_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    clear = _flag(_param(params, "clear"), 1)
    error = _flag(_param(params, "error"), 0)
    try:
        limit = int(_param(params, "limit") or DEFAULT_LIMIT)
    except (TypeError, ValueError):
        raise B24Error("ERROR_ARGUMENT", "Wrong limit", 400) from None
    limit = max(1, min(limit, MAX_LIMIT))
    given_process = str(_param(params, "process_id") or "").strip()
    connector = _connector(portal, _param(params, "auth_connector"))
    flt = listify(_param(params, "filter"))
    st = state(portal)
    candidates = [r for r in st["records"] if r["CONNECTOR"] == connector and r["ERROR"] == error
                  and r["PROCESS_ID"] in ("", given_process) and _matches(portal, r, flt, FILTER_FIELDS)]
    taken = _ordered(candidates, listify(_param(params, "order")), "TIMESTAMP_X", FILTER_FIELDS)[:limit]
    process_id: str | None = None
    if clear:
        ids = {r["ID"] for r in taken}
        rows = [_row(portal, r) for r in taken]
        st["records"] = [r for r in st["records"] if r["ID"] not in ids]
    else:
        process_id = given_process or secrets.token_hex(16)
        for record in taken:
            record["PROCESS_ID"] = process_id
        rows = [_row(portal, r) for r in taken]
    return {"process_id": process_id, "events": rows}


def _offline_clear(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    process_id = _require_process(params)
    ids = {int(i) for i in _ids(_param(params, "id")) if i.isdigit()}
    message_ids = set(_ids(_param(params, "message_id")))
    st = state(portal)

    def cleared(record: dict[str, Any]) -> bool:
        if record["PROCESS_ID"] != process_id:
            return False
        if ids:
            return record["ID"] in ids
        if message_ids:
            return record["MESSAGE_ID"] in message_ids
        return True

    st["records"] = [r for r in st["records"] if not cleared(r)]
    return True


def _offline_error(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    process_id = _require_process(params)
    message_ids = set(_ids(_param(params, "message_id")))
    for record in state(portal)["records"]:
        if record["PROCESS_ID"] == process_id and record["MESSAGE_ID"] in message_ids:
            record["ERROR"] = 1
            record["PROCESS_ID"] = ""
    return True


def _offline_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    connector = _connector(portal, _param(params, "auth_connector"))
    flt = listify(_param(params, "filter"))
    records = [r for r in state(portal)["records"]
               if r["CONNECTOR"] == connector and _matches(portal, r, flt, LIST_FILTER_FIELDS)]
    rows = [_row(portal, r, listing=True)
            for r in _ordered(records, listify(_param(params, "order")), "ID", LIST_FILTER_FIELDS)]
    page: Paged = paginate(rows, params)
    return page


METHODS: dict[str, Callable[[FakePortal, dict[str, Any], CallContext], Any]] = {
    "event.offline.get": _offline_get,
    "event.offline.clear": _offline_clear,
    "event.offline.error": _offline_error,
    "event.offline.list": _offline_list,
}


def install_offline_events(portal: FakePortal) -> FakePortal:
    """Register the methods and the CRM change hook on one portal; idempotent. Features stay as they are."""
    for name, handler in METHODS.items():
        portal.register_method(name, handler)
    with portal.lock:
        hooks = portal.ext.setdefault(HOOKS, [])
        if _crm_hook not in hooks:
            hooks.append(_crm_hook)
        state(portal)
    return portal


def enable_offline_events(portal: FakePortal, *, auth_connector: bool = True) -> FakePortal:
    """Install, and say yes to `feature.get` `rest_offline_extended` (and `rest_auth_connector`)."""
    install_offline_events(portal)
    portal.features["rest_offline_extended"] = "Y"
    portal.features["rest_auth_connector"] = "Y" if auth_connector else "N"
    return portal


def queue(portal: FakePortal) -> list[dict[str, Any]]:
    with portal.lock:
        return [dict(r) for r in state(portal)["records"]]
