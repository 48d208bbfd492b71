"""Bitrix24's `messageservice` REST methods on a FakePortal, with the validation and errors of the wire
contracts (§6), plus builders for what Bitrix24 POSTs to a sender's HANDLER.

    install_messageservice(fake_portal)                # registers the methods and the update/uninstall hooks
    payload = send_from_bitrix24(fake_portal, "sms1", "+79991234567", "Hi")   # form keys of the handler POST
    client.post(handler_path(fake_portal, "sms1"), data=payload)
    status_updates(fake_portal)                        # what messageservice.message.status.update received

State lives in ``portal.ext["messageservice"]``: ``senders`` {CODE: {...}}, ``messages`` {message_id: {...}}
(the messages Bitrix24 itself created, i.e. those built by send_from_bitrix24), ``status_updates`` [...].
Like CORE, an app update or uninstall deletes every sender of the app, and status updates are accepted in
any order (a late ``sent`` overwrites ``delivered``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .bitrix24 import B24Error, CallContext, FakePortal
from .phpquery import flatten_php

CODE_RE = re.compile(r"^[a-z0-9.\-_]+$", re.IGNORECASE)
STATUSES = ("queued", "sent", "delivered", "undelivered", "failed")  # CORE Rest::resolveStatus, lowercase only
KEY = "messageservice"


def state(portal: FakePortal) -> dict[str, Any]:
    return portal.ext.setdefault(KEY, {"senders": {}, "messages": {}, "status_updates": []})


def _param(params: Mapping[str, Any], name: str) -> Any:
    # Bitrix24 reads these keys case-insensitively (our client sends them upper-case)
    for key in (name, name.lower()):
        if key in params:
            return params[key]
    return None


def _text(value: Any) -> str:
    if isinstance(value, dict):  # NAME / DESCRIPTION may be {lang: text}
        return next((str(v) for v in value.values() if v), "")
    return "" if value is None else str(value).strip()


def _check_code(code: str) -> None:
    if not code:
        raise B24Error("ERROR_SENDER_VALIDATION_FAILURE", "Empty sender code!", 400)
    if not CODE_RE.match(code):
        raise B24Error("ERROR_SENDER_VALIDATION_FAILURE", "Wrong sender code!", 400)


def _sender_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    if not params or all(k == "auth" for k in params):
        raise B24Error("ERROR_SENDER_VALIDATION_FAILURE", "Empty data!", 400)
    code = _text(_param(params, "CODE"))
    _check_code(code)
    name = _param(params, "NAME")
    if not _text(name):
        raise B24Error("ERROR_SENDER_VALIDATION_FAILURE", "Empty sender NAME!", 400)
    message_type = _text(_param(params, "TYPE"))
    if not message_type:
        raise B24Error("ERROR_SENDER_VALIDATION_FAILURE", "Empty sender message TYPE!", 400)
    if message_type != "SMS":
        raise B24Error("ERROR_SENDER_VALIDATION_FAILURE", "Unknown sender message TYPE!", 400)
    handler = _text(_param(params, "HANDLER"))
    if not re.match(r"^https?://[^/\s]+", handler):  # HandlerHelper::checkCallback
        raise B24Error("ERROR_HANDLER_URL_MISMATCH", "Handler URL is not valid!", 400)
    senders = state(portal)["senders"]
    if code in senders:
        raise B24Error("ERROR_SENDER_ALREADY_INSTALLED", "Sender already installed!", 400)
    senders[code] = {"CODE": code, "TYPE": "SMS", "HANDLER": handler, "NAME": name,
                     "DESCRIPTION": _param(params, "DESCRIPTION")}
    return True


def _sender_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    code = _text(_param(params, "CODE"))
    if not code:
        raise B24Error("ERROR_SENDER_CODE_REQUIRED", "Sender code is required!", 400)
    changes = {k: _param(params, k) for k in ("HANDLER", "NAME", "DESCRIPTION") if _param(params, k) is not None}
    if not changes:
        raise B24Error("ERROR_SENDER_OTHER_PARAMS_REQUIRED", "At least one other parameter is required!", 400)
    sender = state(portal)["senders"].get(code)
    if sender is None:
        raise B24Error("ERROR_SENDER_NOT_FOUND", "Sender not found!", 400)
    sender.update(changes)
    return True


def _sender_delete(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    code = _text(_param(params, "CODE"))
    _check_code(code)
    if state(portal)["senders"].pop(code, None) is None:
        raise B24Error("ERROR_SENDER_NOT_FOUND", "Sender not found!", 400)
    return True


def _sender_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    return list(state(portal)["senders"])


def _status_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    code = _text(_param(params, "CODE"))
    _check_code(code)
    message_id = _text(_param(params, "MESSAGE_ID"))
    # CORE finds the message by external id only (the CODE filter is ignored)
    message = state(portal)["messages"].get(message_id)
    if message is None:
        raise B24Error("ERROR_MESSAGE_NOT_FOUND", "Message not found!", 400)
    status = _param(params, "STATUS")
    if status not in STATUSES:
        raise B24Error("ERROR_MESSAGE_STATUS_INCORRECT", "Message status incorrect!", 400)
    if message["author_id"] != ctx.user_id:
        ctx.require_admin()  # someone else's message: admin rights required
    state(portal)["status_updates"].append(
        {"CODE": code, "MESSAGE_ID": message_id, "STATUS": status, "user_id": ctx.user_id,
         "in_batch": ctx.in_batch, "at": portal.cloud.now()})
    if message["status"] != status:  # not monotonic: any different status replaces the current one
        message["status"] = status
    return True


METHODS = {
    "messageservice.sender.add": _sender_add,
    "messageservice.sender.update": _sender_update,
    "messageservice.sender.delete": _sender_delete,
    "messageservice.sender.list": _sender_list,
    "messageservice.message.status.update": _status_update,
}


def _drop_senders(portal: FakePortal) -> None:
    # CORE: onRestAppUpdate() calls onRestAppDelete(), which deletes the app's senders
    state(portal)["senders"].clear()


def install_messageservice(portal: FakePortal) -> FakePortal:
    """Register the methods (scope `messageservice`) and the hooks on one portal; idempotent."""
    for name, handler in METHODS.items():
        portal.register_method(name, handler, scope="messageservice")
    for hooks in (portal.on_update, portal.on_uninstall):
        if _drop_senders not in hooks:
            hooks.append(_drop_senders)
    state(portal)
    return portal


def senders(portal: FakePortal) -> dict[str, dict[str, Any]]:
    with portal.lock:
        return {code: dict(s) for code, s in state(portal)["senders"].items()}


def status_updates(portal: FakePortal, message_id: str | None = None) -> list[dict[str, Any]]:
    with portal.lock:
        return [dict(u) for u in state(portal)["status_updates"] if message_id in (None, u["MESSAGE_ID"])]


def message_status(portal: FakePortal, message_id: str) -> str | None:
    with portal.lock:
        message = state(portal)["messages"].get(message_id)
        return message["status"] if message else None


def handler_path(portal: FakePortal, sender_code: str) -> str:
    """The path of the HANDLER a sender was registered with (to POST it through Django's test client)."""
    with portal.lock:
        return urlsplit(state(portal)["senders"][sender_code]["HANDLER"]).path


def send_from_bitrix24(portal: FakePortal, sender_code: str, to: str, body: str, *, with_auth: bool = True,
                       bindings: list[tuple[int, int]] | None = None, bizproc: bool = False,
                       author_id: int = 1, message_id: str | None = None,
                       check_registered: bool = True) -> dict[str, str]:
    """What Bitrix24 POSTs to a sender's HANDLER (contracts §6, sample B), as form keys. The message is
    recorded in the fake (so `message.status.update` finds it). ``with_auth=False`` is a message without
    an author (no ``auth`` block); ``bizproc=True`` is the workflow variant."""
    with portal.lock:
        if check_registered and sender_code not in state(portal)["senders"]:
            raise ValueError(f"sender {sender_code!r} is not registered in this portal")
        message_id = message_id or secrets.token_hex(16)
        state(portal)["messages"][message_id] = {"code": sender_code, "to": to, "body": body, "status": None,
                                                 "author_id": author_id if with_auth else 0}
    payload: dict[str, str] = {}
    if bizproc:
        payload["module_id"] = "bizproc"
        payload["workflow_id"] = f"{secrets.token_hex(6)}.{secrets.randbelow(10**8):08d}"
        payload.update(flatten_php(["crm", "CCrmDocumentLead", "LEAD_98"], "document_id"))
        payload.update(flatten_php(["crm", "CCrmDocumentLead", "LEAD"], "document_type"))
    else:
        payload["module_id"] = "crm"
        for index, (owner_type, owner_id) in enumerate(bindings if bindings is not None else [(3, 123)]):
            payload[f"bindings[{index}][OWNER_TYPE_ID]"] = str(owner_type)
            payload[f"bindings[{index}][OWNER_ID]"] = str(owner_id)
    payload["properties[phone_number]"] = to
    payload["properties[message_text]"] = body
    payload.update({"type": "SMS", "code": sender_code, "message_id": message_id, "message_to": to,
                    "message_body": body, "ts": str(int(portal.cloud.now()))})
    if with_auth:
        payload.update(flatten_php(portal.auth_block(with_tokens=True, user_id=author_id), "auth"))
    return payload
