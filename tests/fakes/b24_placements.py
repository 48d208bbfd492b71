"""Fake Bitrix24 methods for widgets, custom field types and the CRM items the widgets show.

Register on the session cloud with :func:`install` (idempotent); state lives in ``portal.ext``. The
validation and errors follow the wire contracts (§4 placements, §5 userfield types): admin only,
ERROR_PLACEMENT_NOT_FOUND for CRM codes without the crm scope, the 50-character ``rest_<APP_ID>_<code>``
full-code limit, "Handler already binded", camelCase ``placement.get``, and ``placement.unbind``'s count
(one per record found plus one per record removed). Bitrix24 drops widget registrations on uninstall and
handlers on app update: the portal's ``on_uninstall`` / ``on_update`` hooks do that here.

Deep links (``REST_APP_URI``): :func:`open_app_link` plays a click on ``/marketplace/view/<app code>/?params[...]``
(the bound handler and the frame POST, ``PLACEMENT_OPTIONS`` = the params as strings plus ``URI``);
:func:`links_in` finds the ``[url=...]`` links of a timeline comment.

CRM helpers: :func:`add_crm_item` (PHONE multi-field, ``hidden_from`` user ids get ACCESS_DENIED) and
the ``crm.<entity>.get`` methods; ``crm.timeline.comment.add`` records comments in ``timeline(portal)``.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from .bitrix24 import B24Error, CallContext, FakeBitrix24Cloud, FakePortal, paginate

CRM_ENTITIES = ("lead", "deal", "contact", "company")
USERFIELD_ENTITIES = ("lead", "deal", "contact", "company", "quote")
LIST_MENU_CODES = {f"CRM_{e}_LIST_MENU" for e in ("LEAD", "CONTACT", "COMPANY", "DEAL", "SMART_INVOICE", "QUOTE",
                                                   "ACTIVITY")}
OTHER_CODES = {"REST_APP_URI", "PAGE_BACKGROUND_WORKER", "CRM_DEAL_DETAIL_TAB", "CRM_LEAD_DETAIL_TAB",
               "CRM_CONTACT_DETAIL_TAB", "CRM_COMPANY_DETAIL_TAB", "IM_NAVIGATION", "TASK_VIEW_TAB"}
SINGLE_INSTANCE = {"REST_APP_URI", "PAGE_BACKGROUND_WORKER"}
USER_TYPE_RE = re.compile(r"^[a-z0-9_]+$")
FIELD_NAME_RE = re.compile(r"^[A-Z0-9_]+$")
FULL_CODE_MAX = 50


def state(portal: FakePortal) -> dict[str, Any]:
    """The portal's widget/CRM state (created on first use, with the lifecycle hooks attached)."""
    with portal.lock:
        st = portal.ext.get("b24_placements")
        if st is None:
            st = portal.ext["b24_placements"] = {
                "placements": [], "types": [], "userfields": {e: [] for e in USERFIELD_ENTITIES},
                "items": {e: {} for e in CRM_ENTITIES}, "hidden": {}, "timeline": [], "next_id": 100,
            }
            portal.on_uninstall.append(_on_uninstall)
            portal.on_update.append(_on_update)
        return st


def _on_uninstall(portal: FakePortal) -> None:
    st = state(portal)
    st["placements"].clear()
    st["types"].clear()


def _on_update(portal: FakePortal) -> None:
    state(portal)["placements"].clear()  # handlers go with an update (contracts §4, prior art #4)


def _next_id(portal: FakePortal) -> int:
    st = state(portal)
    st["next_id"] += 1
    return int(st["next_id"])


def _upper(params: dict[str, Any]) -> dict[str, Any]:
    return {str(k).upper(): v for k, v in params.items()}


def _check_handler(handler: str, empty_code: str = "EMPTY_ERROR_HANDLER_URL") -> None:
    if not handler:
        raise B24Error(empty_code, "Handler URL is empty", 400)
    parts = urlsplit(handler)
    if parts.scheme not in ("http", "https"):
        raise B24Error("ERROR_UNSUPPORTED_PROTOCOL", "Unsupported protocol", 400)
    host = (parts.hostname or "").lower()
    if not host or host == "localhost" or "." not in host:
        raise B24Error("ERROR_WRONG_HANDLER_URL", "Wrong handler URL", 400)


# -- placements (contracts §4) ------------------------------------------------------------------------------
def placement_bind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    p = _upper(params)
    code = str(p.get("PLACEMENT") or "").strip().upper()
    if not code:
        raise B24Error("ERROR_ARGUMENT", "Argument 'PLACEMENT' is null or empty", 400, argument="PLACEMENT")
    if code not in LIST_MENU_CODES | OTHER_CODES or (code.startswith("CRM_") and "crm" not in portal.scopes):
        raise B24Error("ERROR_PLACEMENT_NOT_FOUND", "Placement not found", 400)
    if p.get("USER_ID") not in (None, "", 0, "0") and code != "PAGE_BACKGROUND_WORKER":
        raise B24Error("ERROR_PLACEMENT_USER_MODE", "User mode is not available for this placement", 400)
    handler = str(p.get("HANDLER") or "").strip()
    _check_handler(handler)
    st = state(portal)
    if code in SINGLE_INSTANCE and any(r["placement"] == code for r in st["placements"]):
        raise B24Error("ERROR_PLACEMENT_MAX_COUNT", "Placement max count exceeded", 400)
    if any(r["placement"] == code and r["handler"] == handler for r in st["placements"]):
        raise B24Error("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)
    lang_all = p.get("LANG_ALL") if isinstance(p.get("LANG_ALL"), dict) else {}
    st["placements"].append({
        "placement": code, "userId": 0, "handler": handler, "options": [],  # LIST_MENU ignores OPTIONS
        "title": str(p.get("TITLE") or ""), "description": str(p.get("DESCRIPTION") or ""),
        "langAll": {str(lang): {"TITLE": v.get("TITLE", ""), "DESCRIPTION": v.get("DESCRIPTION", ""),
                                "GROUP_NAME": v.get("GROUP_NAME", "")}
                    for lang, v in lang_all.items() if isinstance(v, dict)},
    })
    return True


def placement_unbind(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    p = _upper(params)
    code = str(p.get("PLACEMENT") or "").strip().upper()
    if not code:
        raise B24Error("ERROR_ARGUMENT", "Argument 'PLACEMENT' is null or empty", 400, argument="PLACEMENT")
    handler = str(p.get("HANDLER") or "").strip()
    st = state(portal)
    found = [r for r in st["placements"] if r["placement"] == code and (not handler or r["handler"] == handler)]
    st["placements"][:] = [r for r in st["placements"] if r not in found]
    return {"count": len(found) * 2}  # documented quirk: +1 per record found and +1 per removal


def placement_get(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    return [dict(r) for r in state(portal)["placements"]]


def placement_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    codes = sorted(LIST_MENU_CODES | OTHER_CODES)
    scope = str(_upper(params).get("SCOPE") or "").lower()
    if scope == "crm":
        codes = [c for c in codes if c.startswith("CRM_")]
    return codes if "crm" in portal.scopes else [c for c in codes if not c.startswith("CRM_")]


# -- userfield types (contracts §5) ------------------------------------------------------------------------
def _type_params(portal: FakePortal, params: dict[str, Any]) -> tuple[str, str]:
    p = _upper(params)
    type_id = str(p.get("USER_TYPE_ID") or "").strip()
    if not type_id:
        raise B24Error("ERROR_ARGUMENT", "Argument 'USER_TYPE_ID' is null or empty", 400, argument="USER_TYPE_ID")
    handler = str(p.get("HANDLER") or "").strip()
    if not handler:
        raise B24Error("ERROR_ARGUMENT", "Argument 'HANDLER' is null or empty", 400, argument="HANDLER")
    if not USER_TYPE_RE.match(type_id):
        raise B24Error("ERROR_ARGUMENT", "USER_TYPE_ID may contain a-z, 0-9 only", 400, argument="USER_TYPE_ID")
    full = f"rest_{portal.app_id}_{type_id}"
    if len(full) > FULL_CODE_MAX:
        raise B24Error("ERROR_ARGUMENT", f"USER_TYPE_ID is too long: the full code {full} exceeds "
                       f"{FULL_CODE_MAX} characters", 400, argument="USER_TYPE_ID")
    return type_id, handler


def userfieldtype_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    type_id, handler = _type_params(portal, params)
    st = state(portal)
    if any(t["USER_TYPE_ID"] == type_id or t["HANDLER"] == handler for t in st["types"]):
        raise B24Error("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)
    p = _upper(params)
    st["types"].append({"USER_TYPE_ID": type_id, "HANDLER": handler, "TITLE": str(p.get("TITLE") or ""),
                        "DESCRIPTION": str(p.get("DESCRIPTION") or "")})
    return True


def userfieldtype_update(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    type_id, handler = _type_params(portal, params)
    st = state(portal)
    row = next((t for t in st["types"] if t["USER_TYPE_ID"] == type_id), None)
    if row is None:
        raise B24Error("ERROR_NOT_FOUND", "User Field Type not found", 400)
    if any(t is not row and t["HANDLER"] == handler for t in st["types"]):
        raise B24Error("ERROR_CORE", "Unable to set placement handler: Handler already binded", 400)
    p = _upper(params)
    row.update(HANDLER=handler, TITLE=str(p.get("TITLE") or row["TITLE"]),
               DESCRIPTION=str(p.get("DESCRIPTION") or row["DESCRIPTION"]))
    return True


def userfieldtype_list(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    return paginate([dict(t) for t in state(portal)["types"]], params)


def userfieldtype_delete(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    ctx.require_admin()
    type_id = str(_upper(params).get("USER_TYPE_ID") or "").strip()
    if not type_id:
        raise B24Error("ERROR_ARGUMENT", "Argument 'USER_TYPE_ID' is null or empty", 400, argument="USER_TYPE_ID")
    st = state(portal)
    if not any(t["USER_TYPE_ID"] == type_id for t in st["types"]):
        raise B24Error("ERROR_NOT_FOUND", "User Field Type not found", 400)
    st["types"][:] = [t for t in st["types"] if t["USER_TYPE_ID"] != type_id]
    return True


def _userfield_add(entity: str):  # type: ignore[no-untyped-def]
    def handler(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
        ctx.require_admin("Access denied: CRM administrator rights are required")
        fields = params.get("fields") or params.get("FIELDS")
        if not isinstance(fields, dict):
            raise B24Error("ERROR_ARGUMENT", "Argument 'fields' is null or empty", 400, argument="fields")
        fields = _upper(fields)
        name = str(fields.get("FIELD_NAME") or "").strip().upper()
        if not name.startswith("UF_CRM_"):
            name = "UF_CRM_" + name
        if not FIELD_NAME_RE.match(name) or len(name) > 50 or name == "UF_CRM_":
            raise B24Error("ERROR_CORE", "Invalid field name", 400)
        type_id = str(fields.get("USER_TYPE_ID") or "")
        prefix = f"rest_{portal.app_id}_"
        known = {t["USER_TYPE_ID"] for t in state(portal)["types"]}
        builtin = {"string", "integer", "double", "boolean", "date", "datetime", "enumeration", "url"}
        # The short code, an unknown type, or an install not finished yet: "Invalid user type specified".
        ok = type_id in builtin or (type_id.startswith(prefix) and type_id[len(prefix):] in known and portal.installed)
        if not ok:
            raise B24Error("ERROR_CORE", "Invalid user type specified", 400)
        rows = state(portal)["userfields"][entity]
        if any(r["FIELD_NAME"] == name for r in rows):
            raise B24Error("ERROR_CORE", "A field with this name already exists", 400)
        field_id = _next_id(portal)
        rows.append({"ID": str(field_id), "ENTITY_ID": f"CRM_{entity.upper()}", "FIELD_NAME": name,
                     "USER_TYPE_ID": type_id, "MULTIPLE": str(fields.get("MULTIPLE") or "N"),
                     "MANDATORY": str(fields.get("MANDATORY") or "N"), "XML_ID": fields.get("XML_ID")})
        return field_id

    return handler


def _userfield_list(entity: str):  # type: ignore[no-untyped-def]
    def handler(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
        flt = params.get("filter") if isinstance(params.get("filter"), dict) else {}
        rows = state(portal)["userfields"][entity]
        return [dict(r) for r in rows if all(str(r.get(str(k).upper())) == str(v) for k, v in flt.items())]

    return handler


# -- CRM items ---------------------------------------------------------------------------------------------
def add_crm_item(portal: FakePortal, entity: str, fields: dict[str, Any], *, phones: list[str] = (),
                 hidden_from: set[int] | frozenset[int] = frozenset()) -> int:
    """Create a CRM item (``phones`` become the PHONE multi-field); users in ``hidden_from`` may not see it."""
    entity = entity.lower()
    item_id = _next_id(portal)
    row = {"ID": str(item_id), **{k: (str(v) if isinstance(v, int) else v) for k, v in fields.items()}}
    if phones:
        row["PHONE"] = [{"ID": str(_next_id(portal)), "VALUE_TYPE": "WORK", "VALUE": phone, "TYPE_ID": "PHONE"}
                        for phone in phones]
    st = state(portal)
    st["items"][entity][item_id] = row
    st["hidden"][(entity, item_id)] = set(hidden_from)
    return item_id


def _visible(portal: FakePortal, entity: str, item_id: int, ctx: CallContext) -> dict[str, Any]:
    st = state(portal)
    row = st["items"][entity].get(item_id)
    if row is None:
        raise B24Error("", "Not found", 400)
    if ctx.user_id in st["hidden"].get((entity, item_id), set()):
        raise B24Error("ACCESS_DENIED", "Access denied.", 403)
    return row


def _crm_get(entity: str):  # type: ignore[no-untyped-def]
    def handler(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
        raw = _upper(params).get("ID")
        try:
            item_id = int(str(raw))
        except (TypeError, ValueError):
            raise B24Error("", "ID is not defined or invalid.", 400) from None
        return dict(_visible(portal, entity, item_id, ctx))

    return handler


def timeline_comment_add(portal: FakePortal, params: dict[str, Any], ctx: CallContext) -> Any:
    fields = params.get("fields") if isinstance(params.get("fields"), dict) else {}
    fields = _upper(fields)
    entity = str(fields.get("ENTITY_TYPE") or "").lower()
    if entity not in CRM_ENTITIES:
        raise B24Error("ERROR_ARGUMENT", "Invalid ENTITY_TYPE", 400, argument="ENTITY_TYPE")
    try:
        item_id = int(str(fields.get("ENTITY_ID")))
    except (TypeError, ValueError):
        raise B24Error("ERROR_ARGUMENT", "Invalid ENTITY_ID", 400, argument="ENTITY_ID") from None
    comment = str(fields.get("COMMENT") or "")
    if not comment:
        raise B24Error("ERROR_ARGUMENT", "COMMENT is empty", 400, argument="COMMENT")
    _visible(portal, entity, item_id, ctx)
    comment_id = _next_id(portal)
    state(portal)["timeline"].append({"ID": comment_id, "ENTITY_TYPE": entity, "ENTITY_ID": item_id,
                                      "COMMENT": comment, "AUTHOR_ID": ctx.user_id})
    return comment_id


# -- deep links (REST_APP_URI) -----------------------------------------------------------------------------
APP_LINK_RE = re.compile(r"^/marketplace/view/([^/?#]+)/$")
LINK_PARAM_RE = re.compile(r"^params\[([^\[\]]*)\]$")
BBCODE_URL_RE = re.compile(r"\[url=([^\]]+)\]", re.IGNORECASE)


class AppLinkUnavailable(Exception):
    """What the user would see instead of our slider: no app with that code here, or no REST_APP_URI handler."""


def links_in(comment: str) -> list[str]:
    return BBCODE_URL_RE.findall(comment)


def open_app_link(portal: FakePortal, link: str, *, user_id: int = 1, is_admin: bool | None = None,
                  source_page: str = "/crm/deal/list/") -> tuple[str, dict[str, str], dict[str, str]]:
    """A click on an app link in the portal: returns (handler URL, query, form) of the frame POST Bitrix24
    sends to the app's REST_APP_URI handler. Only ``params[...]`` keys reach PLACEMENT_OPTIONS (strings);
    Bitrix24 adds ``URI`` (the page the user came from) unless the link set one."""
    parts = urlsplit(link)
    match = APP_LINK_RE.match(parts.path)
    if parts.netloc and parts.netloc != portal.domain:
        raise AppLinkUnavailable(f"not a link of this portal: {parts.netloc}")
    if match is None:
        raise AppLinkUnavailable(f"not an app link: {parts.path}")
    if match.group(1) != portal.cloud.client_id:
        raise AppLinkUnavailable(f"no application {match.group(1)!r} in this portal")
    handler = next((r["handler"] for r in state(portal)["placements"] if r["placement"] == "REST_APP_URI"), None)
    if handler is None or not portal.installed:
        raise AppLinkUnavailable("the application has no REST_APP_URI handler (an empty slider)")
    options: dict[str, Any] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        param = LINK_PARAM_RE.match(key)
        if param is not None:
            options[param.group(1)] = value
    options.setdefault("URI", source_page)
    query, form = portal.placement_frame("REST_APP_URI", options, user_id=user_id, is_admin=is_admin)
    return handler, query, form


def timeline(portal: FakePortal) -> list[dict[str, Any]]:
    return list(state(portal)["timeline"])


def placements(portal: FakePortal) -> list[dict[str, Any]]:
    return [dict(r) for r in state(portal)["placements"]]


def userfield_types(portal: FakePortal) -> list[dict[str, Any]]:
    return [dict(t) for t in state(portal)["types"]]


def userfields(portal: FakePortal, entity: str) -> list[dict[str, Any]]:
    return [dict(r) for r in state(portal)["userfields"][entity.lower()]]


def install(cloud: FakeBitrix24Cloud) -> None:
    """Register every method on the cloud (existing and future portals); idempotent."""
    methods: dict[str, Any] = {
        "placement.bind": (placement_bind, "placement"),
        "placement.unbind": (placement_unbind, "placement"),
        "placement.get": (placement_get, "placement"),
        "placement.list": (placement_list, "placement"),
        "userfieldtype.add": (userfieldtype_add, "placement"),
        "userfieldtype.update": (userfieldtype_update, "placement"),
        "userfieldtype.list": (userfieldtype_list, "placement"),
        "userfieldtype.delete": (userfieldtype_delete, "placement"),
        "crm.timeline.comment.add": (timeline_comment_add, "crm"),
    }
    for entity in CRM_ENTITIES:
        methods[f"crm.{entity}.get"] = (_crm_get(entity), "crm")
    for entity in USERFIELD_ENTITIES:
        methods[f"crm.{entity}.userfield.add"] = (_userfield_add(entity), "crm")
        methods[f"crm.{entity}.userfield.list"] = (_userfield_list(entity), "crm")
    for name, (handler, scope) in methods.items():
        cloud.register_method(name, handler, scope=scope)


def serve_page(portal: FakePortal, path: str, body: str, content_type: str = "text/html; charset=utf-8") -> str:
    """Serve a static page from the portal's own origin (its real HTTP server) and return its URL.

    Browser tests need a page ON the portal's origin (CSP frame-ancestors names it, and Chromium's local
    network checks refuse a loopback frame inside a page that did not come from a loopback server). The fake
    has no public hook for this, so its server's app is wrapped once; every other path goes to it unchanged.
    """
    from .bitrix24 import _HttpResponse  # the fake's own response type

    with portal.lock:
        pages = state(portal).setdefault("pages", {})
        pages[path] = (content_type, body.encode())
        server = portal._server
        if not getattr(server, "b24_placements_pages", False):
            original = server.app

            def app(request: Any, srv: Any) -> Any:
                page = state(portal)["pages"].get(request.path)
                if page is not None and request.verb in ("GET", "HEAD"):
                    return _HttpResponse(200, page[1], page[0], {"Cache-Control": "no-store"})
                return original(request, srv)

            server.app = app
            server.b24_placements_pages = True
    return f"{portal.base_url}{path}"
