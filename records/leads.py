"""Our record vocabulary → Bitrix24 lead fields (crm.lead.add / crm.lead.update), as data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

# Multi-fields (PHONE, EMAIL) are lists of {ID, VALUE, VALUE_TYPE}: a value sent without an ID is added to the
# lead, one with an ID changes that value (an empty VALUE deletes it).
MULTIFIELD_TYPE = "WORK"
MULTIFIELDS = ("PHONE", "EMAIL")


def split_name(full_name: str) -> tuple[str, str]:
    """"Иван Иванов" → ("Иван", "Иванов"): the first word is the given name, the rest the last name."""
    parts = full_name.split(None, 1)
    return parts[0], (parts[1] if len(parts) > 1 else "")


def lead_fields(payload: Mapping[str, Any], stage_map: Mapping[str, str]) -> dict[str, Any]:
    """The lead fields for the validated `payload`. `stage_map` maps external stages to STATUS_ID (an
    unmapped stage is sent as given: with no mapping loaded, callers use Bitrix24's STATUS_IDs)."""
    fields: dict[str, Any] = {}
    for name, value in (payload.get("extra") or {}).items():
        fields[name] = value
    if "full_name" in payload:
        first, last = split_name(payload["full_name"])
        fields.update({"TITLE": payload["full_name"], "NAME": first, "LAST_NAME": last})
    if "phone" in payload:
        fields["PHONE"] = [{"VALUE": payload["phone"], "VALUE_TYPE": MULTIFIELD_TYPE}]
    if "email" in payload:
        fields["EMAIL"] = [{"VALUE": payload["email"], "VALUE_TYPE": MULTIFIELD_TYPE}]
    if "comment" in payload:
        fields["COMMENTS"] = payload["comment"]
    if "stage" in payload:
        fields["STATUS_ID"] = stage_map.get(payload["stage"], payload["stage"])
    return fields


def origin_fields(external_id: str) -> dict[str, str]:
    """Bitrix24's fields for "this lead is that object of that external system"."""
    return {"ORIGINATOR_ID": settings.RECORDS_ORIGINATOR_ID, "ORIGIN_ID": external_id}


def merged_payload(payloads: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Consecutive updates of one record as one: later values win; extra lead fields merge."""
    out: dict[str, Any] = {}
    for payload in payloads:
        for name, value in payload.items():
            if name == "extra":
                out["extra"] = {**out.get("extra", {}), **value}
            else:
                out[name] = value
    return out


def without_repeated_multifields(fields: dict[str, Any], last_written: Mapping[str, Any]) -> dict[str, Any]:
    """An update adds a PHONE / EMAIL value without an ID as a new one: send them only when they changed
    since our last write, so repeating an update does not pile up copies of the same number."""
    out = dict(fields)
    for name in ("PHONE", "EMAIL"):
        if name in out and out[name] == last_written.get(name):
            del out[name]
    return out


def own_multifields(fields: Mapping[str, Any], known: Mapping[str, Any],
                    ids: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """Record.own_multifields after writing `fields`: per multi-field, the value we wrote and its ID in the
    lead when we know it (`ids`; a value we added gets its ID learned at the next change)."""
    out = {name: dict(value) for name, value in known.items()}
    for name in MULTIFIELDS:
        if fields.get(name):
            out[name] = {"value": str(fields[name][0]["VALUE"]), "id": ids.get(name)}
    return out


def own_multifield(name: str, known: Mapping[str, Any], last_written: Mapping[str, Any]) -> dict[str, Any] | None:
    """Our value of a multi-field: as kept, else (a record synced before we kept it) our last single write."""
    if name in known:
        return dict(known[name])
    written = last_written.get(name)
    if isinstance(written, list) and len(written) == 1 and isinstance(written[0], Mapping):
        return {"value": str(written[0].get("VALUE")), "id": None}
    return None


def replacing_multifield(new: Mapping[str, Any], current: list[Any],
                         own: Mapping[str, Any] | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    """How to make the lead's multi-field (`current`, as read from it) hold `new` in place of the value we wrote
    (`own`: {"value", "id"}) without touching values a person added: (the entries to send or None when the
    lead already has `new`, the ID of our value when known). Ours is found by its ID, else by its value; if it
    is gone, `new` is added."""
    items = [item for item in current if isinstance(item, Mapping) and item.get("ID")]
    for item in items:
        if str(item.get("VALUE")) == str(new["VALUE"]):
            return None, str(item["ID"])  # already there (a repeated update, or a person typed it)
    own = own or {}
    ours = next((item for item in items if own.get("id") and str(item["ID"]) == str(own["id"])), None) \
        or next((item for item in items if own.get("value") and str(item.get("VALUE")) == own["value"]), None)
    if ours is None:
        return [dict(new)], None
    return [{"ID": str(ours["ID"]), **new}], str(ours["ID"])
