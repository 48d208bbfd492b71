"""Placeholders of SMS templates and how each is read from a CRM item, as data.

A template may use only the placeholders below (checked when it is saved); a value the item does not have
is filled in as empty text, never an error. Each placeholder names where it is read, in order, first
non-empty wins: `person` (the contact or lead; a deal's linked contact), `company` (the company; a deal's
linked company; a contact's company), `item` (the item itself).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Placeholder:
    name: str
    label: Any  # lazy translation
    sources: tuple[tuple[str, str], ...] = ()  # (record, field); see the module docstring


PLACEHOLDERS: dict[str, Placeholder] = {p.name: p for p in (
    Placeholder("name", gettext_lazy("Full name (a company: its name)")),
    Placeholder("first_name", gettext_lazy("First name"), (("person", "NAME"),)),
    Placeholder("last_name", gettext_lazy("Last name"), (("person", "LAST_NAME"),)),
    Placeholder("second_name", gettext_lazy("Middle name"), (("person", "SECOND_NAME"),)),
    Placeholder("company", gettext_lazy("Company"), (("company", "TITLE"), ("item", "COMPANY_TITLE"))),
    Placeholder("title", gettext_lazy("Deal or lead title"), (("item", "TITLE"),)),
    Placeholder("phone", gettext_lazy("The phone number the SMS goes to")),
    Placeholder("email", gettext_lazy("E-mail"), (("person", "EMAIL"), ("company", "EMAIL"))),
    Placeholder("id", gettext_lazy("The CRM item's number")),
)}


def used_in(body: str) -> list[str]:
    return list(dict.fromkeys(PLACEHOLDER_RE.findall(body)))


def check_placeholders(body: str) -> None:
    """A ValidationError naming every unknown placeholder (a typo would otherwise go out as empty text)."""
    unknown = [name for name in used_in(body) if name not in PLACEHOLDERS]
    if unknown:
        known = ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        raise ValidationError({"body": [_("Unknown placeholder %(names)s; known: %(known)s.") % {
            "names": ", ".join("{" + name + "}" for name in unknown), "known": known}]})


def _text(value: Any) -> str:
    """A field value as text: multi-fields (EMAIL, PHONE) give their first VALUE."""
    if isinstance(value, list):
        for row in value:
            if isinstance(row, dict) and str(row.get("VALUE") or "").strip():
                return str(row["VALUE"]).strip()
        return ""
    if value is None or isinstance(value, dict | bool):
        return ""
    return str(value).strip()


def values_for(records: Mapping[str, Mapping[str, Any]], *, item_id: int, phone: str) -> dict[str, str]:
    """Every placeholder's value for one item; `records` maps person / company / item to raw CRM fields."""
    values: dict[str, str] = {}
    for placeholder in PLACEHOLDERS.values():
        found = (_text(records.get(record, {}).get(field)) for record, field in placeholder.sources)
        values[placeholder.name] = next((value for value in found if value), "")
    full_name = " ".join(v for v in (values["first_name"], values["last_name"]) if v)
    values["name"] = full_name or values["company"] or values["title"]
    values["phone"] = phone
    values["id"] = str(item_id)
    return values


def fill(body: str, values: Mapping[str, str]) -> str:
    """The text with each placeholder replaced; one without a value (or unknown, in an old template) is empty."""
    return PLACEHOLDER_RE.sub(lambda match: values.get(match.group(1), ""), body)
