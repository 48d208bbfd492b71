"""Bitrix24's CRM lead methods and lead stages on the fake cloud, usable on their own and inside ``batch``.

    b24_crm.install(cloud)                      # (conftest does it for the session cloud) every portal speaks:
    crm.lead.add      {fields: {...}, params}   → the new ID (int). TITLE defaults to "Lead #<ID>", STATUS_ID
                                                  to NEW; an unknown STATUS_ID is 400 "Status not found".
    crm.lead.update   {id, fields, params}      → true; unknown id: 400 error "" "Not found".
    crm.lead.get      {id}                      → the lead (b24_placements serves it: leads live in its store)
    crm.lead.list     {filter, select, order, start} → a page of 50 with total/next (start=-1: no count).
                      FILTER keys are field names with an optional operator prefix (=, !, >, >=, <, <=);
                      ORIGINATOR_ID / ORIGIN_ID among them. SELECT defaults to the scalar fields ("*");
                      PHONE / EMAIL only when named (or "FM"), as in Bitrix24.
    crm.lead.delete   {id}                      → true; unknown id: 400 "Not found".
    crm.status.list   {filter: {ENTITY_ID}, order} → the statuses; ENTITY_ID=STATUS is the lead stages
                      NEW, IN_PROCESS, PROCESSED, CONVERTED, JUNK (``set_lead_stages`` changes them).

Multi-fields (PHONE, EMAIL) are lists of ``{"VALUE": ..., "VALUE_TYPE": "WORK"}``; stored items get an ``ID``
and ``TYPE_ID``. On update an item with an ``ID`` changes (an empty VALUE deletes it), one without is added.

After every add / update / delete, each hook in ``portal.ext["crm_change_hooks"]`` is called as
``hook(portal, "ONCRMLEADADD" | "ONCRMLEADUPDATE" | "ONCRMLEADDELETE", {"FIELDS": {"ID": lead_id}}, params,
ctx)`` (offline events are built on it).

Faults: ``lose_answers(portal, times=1, method="batch")`` executes the next request(s) of ``method`` but
answers 502 with an HTML page instead of the result (the answer is lost after the work was done).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import b24_placements
from .bitrix24 import B24Error, CallContext, FakeBitrix24Cloud, FakePortal, Paged, paginate

MULTIFIELDS = ("PHONE", "EMAIL")
LEAD_STAGES = [("NEW", "Unassigned", 10), ("IN_PROCESS", "In progress", 20), ("PROCESSED", "Processed", 30),
               ("CONVERTED", "Good lead", 40), ("JUNK", "Junk lead", 50)]
HOOKS = "crm_change_hooks"


def leads(portal: FakePortal) -> dict[int, dict[str, Any]]:
    """The portal's leads by id (the same store b24_placements' crm.lead.get reads)."""
    return b24_placements.state(portal)["items"]["lead"]


def all_leads(portal: FakePortal) -> list[dict[str, Any]]:
    with portal.lock:
        return [dict(row) for _, row in sorted(leads(portal).items())]


def stages(portal: FakePortal) -> list[dict[str, Any]]:
    with portal.lock:
        st = portal.ext.setdefault("b24_crm", {})
        if "statuses" not in st:
            st["statuses"] = [{"ID": str(i + 1), "ENTITY_ID": "STATUS", "STATUS_ID": code, "NAME": name,
                               "NAME_INIT": name, "SORT": str(sort), "SYSTEM": "Y" if code in ("NEW", "CONVERTED",
                                                                                              "JUNK") else "N"}
                              for i, (code, name, sort) in enumerate(LEAD_STAGES)]
        return st["statuses"]


def set_lead_stages(portal: FakePortal, codes: list[tuple[str, str]]) -> None:
    """Replace the lead stages with (STATUS_ID, NAME) pairs."""
    with portal.lock:
        portal.ext.setdefault("b24_crm", {})["statuses"] = [
            {"ID": str(i + 1), "ENTITY_ID": "STATUS", "STATUS_ID": code, "NAME": name, "NAME_INIT": name,
             "SORT": str((i + 1) * 10), "SYSTEM": "N"} for i, (code, name) in enumerate(codes)]


def _upper(params: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in params.items()}


def _as_list(value: Any) -> list[Any]:
    """A PHP-encoded list arrives as {"0": ..., "1": ...}."""
    if isinstance(value, dict):
        return [value[k] for k in sorted(value, key=lambda k: int(k) if str(k).isdigit() else 0)]
    if isinstance(value, list):
        return value
    return [] if value in (None, "") else [value]


def _id(params: Mapping[str, Any]) -> int:
    raw = _upper(params).get("ID")
    try:
        return int(str(raw))
    except (TypeError, ValueError):
        raise B24Error("", "ID is not defined or invalid.", 400) from None


def _fields(params: Mapping[str, Any]) -> dict[str, Any]:
    fields = _upper(params).get("FIELDS")
    if fields in (None, "", []):
        return {}
    if not isinstance(fields, dict):
        raise B24Error("", "Parameter 'fields' must be array.", 400)
    return _upper(fields)


def _next_id(portal: FakePortal) -> int:
    st = b24_placements.state(portal)
    st["next_id"] += 1
    return int(st["next_id"])


def _multifield(portal: FakePortal, name: str, current: list[dict[str, Any]], value: Any) -> list[dict[str, Any]]:
    items = [dict(item) for item in current]
    for entry in _as_list(value):
        if not isinstance(entry, dict):
            entry = {"VALUE": entry}
        entry = _upper(entry)
        if entry.get("ID"):
            for item in items:
                if item["ID"] == str(entry["ID"]):
                    if entry.get("VALUE") in (None, ""):
                        items.remove(item)
                    else:
                        item.update(VALUE=str(entry["VALUE"]), VALUE_TYPE=str(entry.get("VALUE_TYPE") or item["VALUE_TYPE"]))
                    break
            continue
        if entry.get("VALUE") in (None, ""):
            continue
        items.append({"ID": str(_next_id(portal)), "VALUE_TYPE": str(entry.get("VALUE_TYPE") or "WORK"),
                      "VALUE": str(entry["VALUE"]), "TYPE_ID": name})
    return items


def _apply_fields(portal: FakePortal, row: dict[str, Any], fields: dict[str, Any]) -> None:
    if "STATUS_ID" in fields and str(fields["STATUS_ID"]) not in {s["STATUS_ID"] for s in stages(portal)}:
        raise B24Error("", f"Status not found: {fields['STATUS_ID']}", 400)
    for name, value in fields.items():
        if name in ("ID", "DATE_CREATE"):
            continue
        if name in MULTIFIELDS:
            row[name] = _multifield(portal, name, row.get(name) or [], value)
            row[f"HAS_{name}"] = "Y" if row[name] else "N"
        else:
            row[name] = "" if value is None else (str(value) if not isinstance(value, list | dict) else value)


def _notify(portal: FakePortal, event: str, lead_id: int, params: dict[str, Any], ctx: CallContext) -> None:
    for hook in list(portal.ext.setdefault(HOOKS, [])):
        hook(portal, event, {"FIELDS": {"ID": lead_id}}, params, ctx)


def lead_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    fields = _fields(params)
    lead_id = _next_id(portal)
    now = portal.cloud.now()
    row: dict[str, Any] = {"ID": str(lead_id), "TITLE": f"Lead #{lead_id}", "STATUS_ID": "NEW",
                           "DATE_CREATE": now, "DATE_MODIFY": now, "CREATED_BY_ID": str(ctx.user_id),
                           "MODIFY_BY_ID": str(ctx.user_id), "HAS_PHONE": "N", "HAS_EMAIL": "N"}
    _apply_fields(portal, row, fields)
    if not row.get("TITLE"):
        row["TITLE"] = f"Lead #{lead_id}"
    leads(portal)[lead_id] = row
    b24_placements.state(portal)["hidden"][("lead", lead_id)] = set()
    _notify(portal, "ONCRMLEADADD", lead_id, params, ctx)
    return lead_id


def lead_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    lead_id = _id(params)
    row = leads(portal).get(lead_id)
    if row is None:
        raise B24Error("", "Not found", 400)
    fields = _fields(params)
    updated = dict(row)
    _apply_fields(portal, updated, fields)
    updated.update(DATE_MODIFY=portal.cloud.now(), MODIFY_BY_ID=str(ctx.user_id))
    leads(portal)[lead_id] = updated
    _notify(portal, "ONCRMLEADUPDATE", lead_id, params, ctx)
    return True


def lead_delete(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    lead_id = _id(params)
    if leads(portal).pop(lead_id, None) is None:
        raise B24Error("", "Not found", 400)
    _notify(portal, "ONCRMLEADDELETE", lead_id, params, ctx)
    return True


_OPERATORS = (">=", "<=", "!=", "=", "!", ">", "<")


def _matches(row: Mapping[str, Any], key: str, wanted: Any) -> bool:
    op = next((o for o in _OPERATORS if key.startswith(o)), "")
    name = key[len(op):].upper()
    value = row.get(name)
    if name in MULTIFIELDS:
        values = [item["VALUE"] for item in value or []]
        hit = any(str(v) == str(w) for v in values for w in _as_list(wanted))
        return not hit if op in ("!", "!=") else hit
    options = [str(w) for w in _as_list(wanted)] if isinstance(wanted, list | dict) else [str(wanted)]
    if op in ("", "="):
        return str(value if value is not None else "") in options
    if op in ("!", "!="):
        return str(value if value is not None else "") not in options

    def number(text: Any) -> float:
        try:
            return float(text)
        except (TypeError, ValueError):
            return 0.0

    left, right = number(value), number(options[0])
    return {">": left > right, ">=": left >= right, "<": left < right, "<=": left <= right}[op]


def _select(row: Mapping[str, Any], select: list[str]) -> dict[str, Any]:
    names = [str(s).upper() for s in select] or ["*"]
    out: dict[str, Any] = {}
    if "*" in names:
        out.update({k: v for k, v in row.items() if k not in MULTIFIELDS})
    for name in names:
        if name == "FM":
            out.update({k: row.get(k, []) for k in MULTIFIELDS})
        elif name != "*":
            out[name] = row.get(name, [] if name in MULTIFIELDS else None)
    out["ID"] = row["ID"]
    return out


def lead_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    upper = _upper(params)
    flt = upper.get("FILTER") or {}
    flt = flt if isinstance(flt, dict) else {}
    order = upper.get("ORDER") or {}
    order = _upper(order) if isinstance(order, dict) else {}
    rows = [row for _, row in sorted(leads(portal).items())
            if all(_matches(row, str(k), v) for k, v in flt.items())
            and ctx.user_id not in b24_placements.state(portal)["hidden"].get(("lead", int(row["ID"])), set())]
    for name, direction in reversed(list(order.items())):
        rows.sort(key=lambda r, n=name: (float(r[n]) if str(r.get(n, "")).replace(".", "", 1).isdigit()
                                         else str(r.get(n, ""))), reverse=str(direction).upper() == "DESC")
    selected = [_select(row, _as_list(upper.get("SELECT"))) for row in rows]
    return paginate(selected, {"start": upper.get("START", params.get("start"))})


def status_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    upper = _upper(params)
    flt = upper.get("FILTER") or {}
    flt = _upper(flt) if isinstance(flt, dict) else {}
    rows = [dict(s) for s in stages(portal) if all(_matches(s, k, v) for k, v in flt.items())]
    rows.sort(key=lambda s: int(s["SORT"]))
    return Paged(rows)


METHODS = {
    "crm.lead.add": lead_add,
    "crm.lead.update": lead_update,
    "crm.lead.list": lead_list,
    "crm.lead.delete": lead_delete,
    "crm.status.list": status_list,
}


def install(cloud: FakeBitrix24Cloud) -> None:
    """Register the methods (scope crm) on the cloud: existing and future portals; idempotent."""
    for name, handler in METHODS.items():
        cloud.register_method(name, handler, scope="crm")


def lose_answers(portal: FakePortal, times: int = 1, method: str = "batch") -> None:
    """The next `times` requests of `method` are executed, but their answer is replaced by a 502 page."""
    from .bitrix24 import _HttpResponse  # the fake's own response type

    with portal.lock:
        st = portal.ext.setdefault("b24_crm", {})
        st["lose"] = {"method": method.lower(), "times": times}
        server = portal._server
        if getattr(server, "b24_crm_losing", False):
            return
        original = server.app

        def app(request: Any, srv: Any) -> Any:
            response = original(request, srv)
            with portal.lock:
                lose = portal.ext["b24_crm"].get("lose") or {}
                path_method = request.path.rstrip("/").rsplit("/", 1)[-1].lower().removesuffix(".json")
                if lose.get("times", 0) > 0 and path_method == lose["method"]:
                    lose["times"] -= 1
                    return _HttpResponse(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
            return response

        server.app = app
        server.b24_crm_losing = True
