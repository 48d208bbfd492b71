"""Our record vocabulary → Bitrix24 lead fields (crm.lead.add / crm.lead.update), as data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.conf import settings

# Multi-fields (PHONE, EMAIL) are lists of {VALUE, VALUE_TYPE}; a value without an ID is added to the lead.
MULTIFIELD_TYPE = "WORK"


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
