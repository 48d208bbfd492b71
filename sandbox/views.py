"""The sandbox's pages (a small Bitrix24 look-alike) and the wire endpoints that hand requests to the
emulation (sandbox.engine). Development only: every view answers 404 unless SANDBOX_ENABLED."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from b24portal.intake import Rejected, rejects_bad_input
from b24portal.middleware import server_to_server

from . import engine
from .actions import do_prepare_sandbox_portal
from .emulation import RESET, FakeSmsRu, HttpAnswer, Reply

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponse])

SHIM = Path(__file__).resolve().parent / "static" / "sandbox" / "bx24.js"
PHONE_RE = re.compile(r"^\+[1-9][0-9]{6,14}$")
MODES = ("view", "edit")
MAX_SMS_BODY = 1000


def sandbox_only(view: ViewFunc) -> ViewFunc:
    """404 unless the sandbox is on (it is never reachable with production settings)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not settings.SANDBOX_ENABLED:
            raise Http404("the sandbox is off")
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


def sandbox_page(view: ViewFunc) -> ViewFunc:
    """A page (or the JSON a page polls) of the sandbox: sandbox only, GET only, never cached."""
    return sandbox_only(require_GET(never_cache(view)))


def wire_endpoint(view: ViewFunc) -> ViewFunc:
    """A wire endpoint that our service and workers call as they call a real portal, auth server or carrier:
    sandbox only, from servers (no session, locale, CSRF, auth or messages middleware), GET or POST."""
    return sandbox_only(server_to_server(csrf_exempt(require_http_methods(["GET", "POST"])(view))))


def _entity(entity: str) -> str:
    if entity not in engine.ENTITIES:
        raise Http404("unknown CRM entity")
    return entity


def _context(request: HttpRequest, section: str, **extra: Any) -> dict[str, Any]:
    sandbox = engine.current()
    return {"section": section, "sandbox": sandbox, "entities": engine.ENTITIES, "public_url": sandbox.public_url,
            "own_app": settings.B24_OAUTH_URL == sandbox.cloud.oauth_url, **extra}


def on_own_address(view: ViewFunc) -> ViewFunc:
    """A page opened on another host moves to the sandbox portal's address: our frames name the portal's
    origin in frame-ancestors, so the page must be on that origin."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.get_host() != settings.SANDBOX_DOMAIN:
            return HttpResponseRedirect(f"{settings.PUBLIC_URL}{request.get_full_path()}")
        return view(request, *args, **kwargs)

    return wrapper  # type: ignore[return-value]  # functools.wraps keeps the signature


# -- pages -------------------------------------------------------------------------------------------------

@sandbox_page
@on_own_address
def applications(request: HttpRequest) -> HttpResponse:
    return render(request, "sandbox/applications.html", _context(request, "apps"))


@sandbox_page
@on_own_address
def crm_list(request: HttpRequest, entity: str) -> HttpResponse:
    sandbox = engine.current()
    entity = _entity(entity)
    rows = [{"id": int(row["ID"]), "title": _title(row), "phones": sandbox.phones(entity, int(row["ID"]))}
            for row in sandbox.items(entity)]
    return render(request, "sandbox/crm_list.html", _context(
        request, "crm", entity=entity, meta=engine.ENTITIES[entity], rows=rows, menu=sandbox.list_menu(entity)))


@sandbox_page
@on_own_address
def crm_card(request: HttpRequest, entity: str, item_id: int) -> HttpResponse:
    sandbox = engine.current()
    entity = _entity(entity)
    row = sandbox.item(entity, item_id)
    if row is None:
        raise Http404("no such item")
    return render(request, "sandbox/crm_card.html", _context(
        request, "crm", entity=entity, meta=engine.ENTITIES[entity], item=row, item_id=item_id, title=_title(row),
        phones=sandbox.phones(entity, item_id), field=sandbox.consent_field(entity),
        field_value=sandbox.field_values.get((entity, item_id), ""),
        menu=sandbox.list_menu(entity), senders=sandbox.senders()))


@sandbox_page
@on_own_address
def log_page(request: HttpRequest) -> HttpResponse:
    return render(request, "sandbox/log.html", _context(request, "log"))


@sandbox_page
@rejects_bad_input
def log_entries(request: HttpRequest) -> HttpResponse:
    after = _int(request.GET.get("after", "0"), "after")
    return JsonResponse({"entries": [e.as_dict() for e in engine.current().log_entries(after)]})


@sandbox_page
@rejects_bad_input
def timeline(request: HttpRequest, entity: str, item_id: int) -> HttpResponse:
    entity = _entity(entity)
    return JsonResponse({"rows": engine.current().timeline(entity, item_id)})


@sandbox_page
def registered(request: HttpRequest) -> HttpResponse:
    return JsonResponse(engine.current().registered())


@sandbox_only
@require_GET
def bx24_js(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(SHIM.read_bytes(), content_type="application/javascript; charset=utf-8")
    response["Cache-Control"] = "no-store"
    return response


# -- actions a person takes in the sandbox (JSON, CSRF-protected) ------------------------------------------

@sandbox_only
@require_POST
@rejects_bad_input
def frame(request: HttpRequest) -> HttpResponse:
    """The fields Bitrix24 would POST into an iframe: install, app, a list-menu slider or the consent field."""
    sandbox = engine.current()
    kind = request.POST.get("kind", "")
    data: dict[str, Any] | None
    if kind == "install":
        data = sandbox.install_frame()
    elif kind == "app":
        data = sandbox.app_frame()
    elif kind in ("placement", "field"):
        entity = request.POST.get("entity", "")
        if entity not in engine.ENTITIES:
            raise Rejected("unknown CRM entity")
        item_id = _int(request.POST.get("id", ""), "id")
        if sandbox.item(entity, item_id) is None:
            raise Rejected("no such CRM item", 404)
        if kind == "placement":
            data = sandbox.placement_frame(f"CRM_{entity.upper()}_LIST_MENU", {"ID": str(item_id)})
        else:
            mode = request.POST.get("mode", "view")
            if mode not in MODES:
                raise Rejected("mode must be view or edit")
            data = sandbox.field_frame(entity, item_id, mode)
    else:
        raise Rejected("kind must be install, app, placement or field")
    if data is None:
        raise Rejected("b24portal has not registered that yet: install it first", 409)
    return JsonResponse(data)


@sandbox_only
@require_POST
@rejects_bad_input
def bx24_call(request: HttpRequest) -> HttpResponse:
    """What a frame's BX24 SDK asks of the portal (the shim forwards it through the sandbox page)."""
    sandbox = engine.current()
    method = request.POST.get("method", "")
    if method == "installFinish":
        first = sandbox.finish_install()
        outcome = do_prepare_sandbox_portal(
            sandbox.member_id, carrier_url=sandbox.carrier.base_url, api_id=FakeSmsRu.API_ID) if first else "again"
        return JsonResponse({"installed": True, "prepared": outcome})
    if method == "setValue":
        entity = request.POST.get("entity", "")
        if entity not in engine.ENTITIES:
            raise Rejected("unknown CRM entity")
        item_id = _int(request.POST.get("id", ""), "id")
        value = request.POST.get("value", "")
        if len(value) > 1000:
            raise Rejected("value too long")
        sandbox.set_field_value(entity, item_id, value)
        return JsonResponse({"saved": True})
    raise Rejected("unknown BX24 method")


@sandbox_only
@require_POST
@rejects_bad_input
def send_sms(request: HttpRequest, entity: str, item_id: int) -> HttpResponse:
    """"Send SMS" on a card: through the sandbox's message service to our registered handler."""
    sandbox = engine.current()
    entity = _entity(entity)
    if sandbox.item(entity, item_id) is None:
        raise Rejected("no such CRM item", 404)
    phone = request.POST.get("phone", "").strip()
    body = request.POST.get("body", "").strip()
    if not PHONE_RE.match(phone):
        raise Rejected("phone must be an E.164 number, e.g. +79991234567")
    if not body or len(body) > MAX_SMS_BODY:
        raise Rejected(f"the message must have 1 to {MAX_SMS_BODY} characters")
    try:
        message = sandbox.send_sms(entity, item_id, phone, body)
    except LookupError as exc:
        raise Rejected(str(exc), 409) from None
    return JsonResponse({"message_id": message.message_id, "handler_status": message.handler_status,
                         "handler_answer": message.handler_answer})


@sandbox_only
@require_POST
def uninstall(request: HttpRequest) -> HttpResponse:
    outcomes = engine.current().uninstall()
    return JsonResponse({"delivered": [{"handler": h, "status": s} for h, s in outcomes]})


@sandbox_only
@require_POST
def update_app(request: HttpRequest) -> HttpResponse:
    outcomes = engine.current().update_app()
    return JsonResponse({"delivered": [{"handler": h, "status": s} for h, s in outcomes]})


@sandbox_only
@require_POST
def reset(request: HttpRequest) -> HttpResponse:
    sandbox = engine.reset()
    return JsonResponse({"member_id": sandbox.member_id})


# -- the wire: our service and workers call these like a real portal, auth server and carrier ---------------

def _answer(answer: HttpAnswer) -> HttpResponse:
    response = HttpResponse(answer.body, status=answer.status, content_type=answer.content_type)
    for name, value in answer.headers.items():
        response[name] = value
    return response


def _headers(request: HttpRequest) -> dict[str, str]:
    return {"Content-Type": request.META.get("CONTENT_TYPE", ""), "Host": request.get_host()}  # with its boundary


def _forward(request: HttpRequest, serve: Callable[..., Any], path: str) -> HttpResponse:
    """Hand a wire request (method, path, query, headers, body) to the emulation and answer with its reply."""
    body = request.body if request.method == "POST" else b""
    return _answer(serve(request.method or "GET", path, request.META.get("QUERY_STRING", ""),
                         _headers(request), body))


@wire_endpoint
def portal_rest(request: HttpRequest, method: str) -> HttpResponse:
    """``<portal>/rest/<method>``: the sandbox portal's REST API."""
    return _forward(request, engine.current().rest, f"/rest/{method}")


@wire_endpoint
def oauth_server(request: HttpRequest, path: str) -> HttpResponse:
    """The sandbox auth server: ``/sandbox/oauth/token/`` and ``/sandbox/rest/app.info``."""
    return _forward(request, engine.current().oauth, f"/{path}")


@wire_endpoint
def carrier(request: HttpRequest, path: str) -> HttpResponse:
    """The sandbox SMS carrier (SMS.ru's protocol)."""
    params = {str(k): str(v) for k, v in request.GET.items()}
    if request.method == "POST" and "json" not in (request.content_type or ""):
        params.update({str(k): str(v) for k, v in request.POST.items()})
    headers = {k.lower(): v for k, v in request.headers.items()}
    reply: Reply = engine.current().carrier_request(request.method or "GET", f"/{path}", params, headers)
    if reply is RESET:
        return HttpResponse(status=502)
    response = HttpResponse(reply.body, status=reply.status, content_type=reply.content_type)
    for name, value in reply.headers:
        response[name] = value
    return response


# -- helpers -------------------------------------------------------------------------------------------------

def _int(raw: str, name: str) -> int:
    if not re.fullmatch(r"[0-9]{1,12}", raw or ""):
        raise Rejected(f"{name} must be a whole number")
    return int(raw)


def _title(row: dict[str, Any]) -> str:
    name = " ".join(str(row.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
    title = str(row.get("TITLE") or "")
    return f"{title} ({name})" if title and name else title or name or f"#{row.get('ID')}"
