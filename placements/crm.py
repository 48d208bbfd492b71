"""CRM items as our widgets need them: a name and phone numbers, read with the USER's own token so that
Bitrix24's permissions decide what the user may see."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.utils.translation import gettext as _

from oauth.errors import B24AccessDenied, B24Error

if TYPE_CHECKING:
    from oauth.client import PortalClient


@dataclass(frozen=True)
class CrmEntity:
    code: str  # LEAD, DEAL, ...
    owner_type_id: int  # what messageservice bindings call OWNER_TYPE_ID
    timeline_type: str  # crm.timeline.comment.add ENTITY_TYPE
    title_fields: tuple[str, ...]
    has_phones: bool = True
    # Deals keep no phones of their own: they are read from the linked contact and company.
    phone_sources: tuple[tuple[str, str], ...] = ()

    @property
    def get_method(self) -> str:
        return f"crm.{self.code.lower()}.get"


ENTITIES: dict[str, CrmEntity] = {
    "LEAD": CrmEntity("LEAD", 1, "lead", ("TITLE", "NAME", "LAST_NAME")),
    "DEAL": CrmEntity("DEAL", 2, "deal", ("TITLE",), has_phones=False,
                      phone_sources=(("CONTACT_ID", "CONTACT"), ("COMPANY_ID", "COMPANY"))),
    "CONTACT": CrmEntity("CONTACT", 3, "contact", ("NAME", "LAST_NAME")),
    "COMPANY": CrmEntity("COMPANY", 4, "company", ("TITLE",)),
}
LIST_MENU_RE = re.compile(r"^CRM_([A-Z]+)_LIST_MENU$")
ITEM_ID_RE = re.compile(r"^[1-9][0-9]{0,18}$")


class ItemUnavailable(Exception):
    """The item cannot be shown: unknown type, not visible to this user, or gone. `reason` is user-facing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Phone:
    value: str
    value_type: str
    entity: str  # which item it belongs to (a deal's phones come from its contact or company)
    entity_id: int


@dataclass
class CrmItem:
    entity: CrmEntity
    id: int
    title: str
    phones: list[Phone] = field(default_factory=list)
    # The raw fields as Bitrix24 returned them, and those of the linked items read for a deal's phones
    # (by entity code): what SMS templates fill their placeholders from, without reading the item again.
    fields: dict[str, Any] = field(default_factory=dict)
    related: dict[str, dict[str, Any]] = field(default_factory=dict)

    def bindings(self) -> list[dict[str, int]]:
        """Message bindings: the item itself, plus the contact/company whose phone is used (deals)."""
        rows = [{"OWNER_TYPE_ID": self.entity.owner_type_id, "OWNER_ID": self.id}]
        for phone in self.phones:
            owner = ENTITIES[phone.entity]
            row = {"OWNER_TYPE_ID": owner.owner_type_id, "OWNER_ID": phone.entity_id}
            if row not in rows:
                rows.append(row)
        return rows


def entity_for_placement(placement: str) -> CrmEntity | None:
    match = LIST_MENU_RE.match(placement or "")
    return ENTITIES.get(match.group(1)) if match else None


def entity_for_userfield(entity_id: str) -> CrmEntity | None:
    """USERFIELD_TYPE's ENTITY_ID: CRM_CONTACT, CRM_LEAD, ..."""
    code = (entity_id or "").upper()
    return ENTITIES.get(code[4:]) if code.startswith("CRM_") else None


def _title(entity: CrmEntity, data: dict[str, Any]) -> str:
    parts = [str(data.get(name) or "").strip() for name in entity.title_fields]
    text = " ".join(p for p in parts if p)
    return text or f"#{data.get('ID')}"


def _phones(entity: CrmEntity, item_id: int, data: dict[str, Any]) -> list[Phone]:
    rows = data.get("PHONE") or []
    if not isinstance(rows, list):
        return []
    return [Phone(str(row.get("VALUE")).strip(), str(row.get("VALUE_TYPE") or ""), entity.code, item_id)
            for row in rows if isinstance(row, dict) and str(row.get("VALUE") or "").strip()]


def _get(client: PortalClient, entity: CrmEntity, item_id: int) -> dict[str, Any]:
    try:
        data = client.call(entity.get_method, {"id": item_id})
    except B24AccessDenied:
        raise ItemUnavailable(_("You do not have access to this item in Bitrix24.")) from None
    except B24Error as exc:
        if "not found" in (exc.description or "").lower() or exc.code.upper() in ("NOT_FOUND", "ERROR_NOT_FOUND"):
            raise ItemUnavailable(_("This item was not found in Bitrix24 (it may have been deleted).")) from None
        raise
    if not isinstance(data, dict):
        raise ItemUnavailable(_("Bitrix24 answered with something that is not an item."))
    return data


def load_fields(client: PortalClient, entity: CrmEntity, item_id: int) -> dict[str, Any]:
    """One item's raw fields with the client's (the user's) rights. Raises ItemUnavailable or B24Error."""
    return _get(client, entity, item_id)


def load_item(client: PortalClient, entity: CrmEntity, item_id: int) -> CrmItem:
    """The item and its phones, with the client's (the user's) rights. Raises ItemUnavailable or B24Error."""
    data = _get(client, entity, item_id)
    item = CrmItem(entity, item_id, _title(entity, data), fields=data)
    if entity.has_phones:
        item.phones = _phones(entity, item_id, data)
    for id_field, source_code in entity.phone_sources:
        source_id = str(data.get(id_field) or "")
        if not ITEM_ID_RE.match(source_id):
            continue
        source = ENTITIES[source_code]
        try:
            source_data = _get(client, source, int(source_id))
        except ItemUnavailable:
            continue  # a linked contact the user may not see simply adds no phones
        item.related[source_code] = source_data
        item.phones.extend(_phones(source, int(source_id), source_data))
    return item
