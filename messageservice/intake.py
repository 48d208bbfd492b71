"""Parsing the messageservice handler POST before anything is stored (what Bitrix24 sends to a sender's
HANDLER: bitrix24/b24restdocs api-reference/messageservice/messageservice-sender-add.md).

Everything is untrusted; each problem raises b24portal.intake.Rejected (→ a 4xx with the reason).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from b24portal.intake import MEMBER_ID_RE, TOKEN_RE, Rejected, text_field
from b24portal.phpquery import NestedKeyError, as_list

from .models import SENDER_CODE_RE

HANDLER_KEY_RE = re.compile(r"^[A-Za-z0-9_-]{20,64}$")
MESSAGE_ID_RE = re.compile(r"^[0-9a-fA-F]{32}$")  # md5(ID|uniqid()) in CORE
MAX_BODY_CHARS = 5000
MAX_BINDINGS = 50
MAX_ID = 2**63 - 1

#: bizproc document ids → CRM owner type (document_id[2] is e.g. "LEAD_98", "DYNAMIC_128_5")
DOCUMENT_PREFIXES: dict[str, int] = {"LEAD": 1, "DEAL": 2, "CONTACT": 3, "COMPANY": 4, "QUOTE": 7,
                                     "SMART_INVOICE": 31}
_DOCUMENT_RE = re.compile(r"^(?P<prefix>[A-Z_]+?)_(?P<id>\d{1,18})$")
_DYNAMIC_RE = re.compile(r"^DYNAMIC_(?P<type>\d{1,9})_(?P<id>\d{1,18})$")


@dataclass(frozen=True)
class IncomingMessage:
    code: str
    message_id: str
    to: str
    body: str
    origin: str
    bindings: list[dict[str, int]]
    meta: dict[str, Any]
    auth: dict[str, str] | None
    author_user_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _text(data: dict[str, Any], key: str, *, max_length: int = 255, required: bool = False) -> str:
    # Message text keeps its whitespace; everything else is checked like any Bitrix24 form value.
    return text_field(data, key, required=required, max_length=max_length, strip=False)


def _positive_int(value: Any, name: str) -> int:
    if not isinstance(value, str) or not value.strip().isdigit():
        raise Rejected(f"{name} must be a positive integer")
    number = int(value.strip())
    if not 0 < number <= MAX_ID:
        raise Rejected(f"{name} is out of range")
    return number


def _list(value: Any, name: str) -> list[Any]:
    if value in (None, ""):
        return []
    try:
        return as_list(value)
    except NestedKeyError:
        raise Rejected(f"{name} must be a list") from None


def _bindings(payload: dict[str, Any]) -> list[dict[str, int]]:
    items = _list(payload.get("bindings"), "bindings")
    if len(items) > MAX_BINDINGS:
        raise Rejected("too many bindings")
    out: list[dict[str, int]] = []
    for item in items:
        if not isinstance(item, dict):
            raise Rejected("each binding must have OWNER_TYPE_ID and OWNER_ID")
        out.append({"OWNER_TYPE_ID": _positive_int(item.get("OWNER_TYPE_ID"), "OWNER_TYPE_ID"),
                    "OWNER_ID": _positive_int(item.get("OWNER_ID"), "OWNER_ID")})
    return out


def _strings(payload: dict[str, Any], key: str) -> list[str]:
    items = _list(payload.get(key), key)
    if len(items) > 5 or not all(isinstance(i, str) and len(i) <= 100 for i in items):
        raise Rejected(f"{key} must be a short list of strings")
    return items


def binding_of_document(document_id: list[str]) -> dict[str, int] | None:
    """A workflow's CRM document as a binding: ["crm", "CCrmDocumentLead", "LEAD_98"] → (1, 98)."""
    if len(document_id) != 3 or document_id[0] != "crm":
        return None
    key = document_id[2].upper()
    if match := _DYNAMIC_RE.match(key):
        return {"OWNER_TYPE_ID": int(match["type"]), "OWNER_ID": int(match["id"])}
    if (match := _DOCUMENT_RE.match(key)) and match["prefix"] in DOCUMENT_PREFIXES:
        return {"OWNER_TYPE_ID": DOCUMENT_PREFIXES[match["prefix"]], "OWNER_ID": int(match["id"])}
    return None


def _auth(payload: dict[str, Any]) -> dict[str, str] | None:
    if "auth" not in payload:
        return None  # Bitrix24 attaches auth only when the message has an author
    auth = payload["auth"]
    if not isinstance(auth, dict):
        raise Rejected("auth must be a nested form block")
    member_id = _text(auth, "member_id", max_length=64)
    token = _text(auth, "application_token", max_length=256)
    if not MEMBER_ID_RE.match(member_id) or not TOKEN_RE.match(token):
        raise Rejected("auth block without a valid member_id and application_token", 403)
    block = {"member_id": member_id, "application_token": token}
    user_id = auth.get("user_id")
    if isinstance(user_id, str) and user_id.isdigit() and 0 < int(user_id) <= MAX_ID:
        block["user_id"] = user_id
    return block


def parse_handler_payload(payload: dict[str, Any]) -> IncomingMessage:
    message_type = _text(payload, "type", max_length=10, required=True)
    if message_type.upper() != "SMS":
        raise Rejected("type must be SMS")
    code = _text(payload, "code", max_length=50, required=True)
    if not SENDER_CODE_RE.match(code):
        raise Rejected("code is not a sender code")
    message_id = _text(payload, "message_id", max_length=32, required=True)
    if not MESSAGE_ID_RE.match(message_id):
        raise Rejected("message_id must be 32 hex characters")
    raw_properties = payload.get("properties")
    properties: dict[str, Any] = raw_properties if isinstance(raw_properties, dict) else {}
    # Legacy `properties[...]` duplicate the fields; they stand in only when the new field is missing.
    to = (_text(payload, "message_to", max_length=64) or _text(properties, "phone_number", max_length=64)).strip()
    if not to:
        raise Rejected("missing message_to")
    body = _text(payload, "message_body", max_length=MAX_BODY_CHARS) or _text(
        properties, "message_text", max_length=MAX_BODY_CHARS)
    if not body.strip():
        raise Rejected("missing message_body")
    module_id = _text(payload, "module_id", max_length=50)
    bindings = _bindings(payload)
    meta: dict[str, Any] = {"module_id": module_id} if module_id else {}
    ts = _text(payload, "ts", max_length=20)
    if ts:
        if not ts.isdigit():
            raise Rejected("ts must be a unix timestamp")
        meta["ts"] = int(ts)
    workflow_id = _text(payload, "workflow_id", max_length=64)
    document_id = _strings(payload, "document_id")
    document_type = _strings(payload, "document_type")
    if workflow_id or document_id:
        meta.update(workflow_id=workflow_id, document_id=document_id, document_type=document_type)
        derived = binding_of_document(document_id)
        if derived is not None and derived not in bindings:
            bindings.append(derived)
    if module_id == "bizproc" or workflow_id:
        origin = "bizproc"
    elif module_id == "crm":
        origin = "crm"
    else:
        origin = "other"
    auth = _auth(payload)
    author = int(auth["user_id"]) if auth and "user_id" in auth else None
    return IncomingMessage(code=code, message_id=message_id.lower(), to=to, body=body, origin=origin,
                           bindings=bindings, meta=meta, auth=auth, author_user_id=author)
