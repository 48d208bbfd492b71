"""The pages Bitrix24 frames: the CRM list-menu slider, the deep-link slider (REST_APP_URI), the SMS-consent
field, the app's main page.

Each is a `frame_view` (placements.frames): verified before this code runs, rendered in the user's
language, frameable by that portal only. Problems a user can meet (unknown entity, an item they may not
see, no phones, Bitrix24 unreachable) are a 200 page that says so, never a 500.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from messageservice import consent as consent_api
from messageservice.accounts import accounts_for
from messageservice.sending import messages_by_author, messages_for_crm_item
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.models import PortalToken

from . import config, extensions
from .crm import (
    ENTITIES,
    ITEM_ID_RE,
    CrmEntity,
    CrmItem,
    ItemUnavailable,
    entity_for_placement,
    entity_for_userfield,
    load_item,
)
from .frames import FrameContext, frame_view
from .models import Binding


def _page(request: HttpRequest, context: FrameContext, template: str, extra: dict[str, Any],
          token: str | None = None) -> HttpResponse:
    frame_config = {"token": token or context.frame_token, "lang": context.lang, "userId": context.user_id,
                    "isAdmin": context.is_admin}
    return render(request, template, {
        "frame": context, "portal": context.portal, "lang": context.lang, "bx24_sdk_url": config.sdk_url(),
        "frame_config": frame_config, **extra,
    })


def _notice(request: HttpRequest, context: FrameContext, message: str, *, title: str = "",
            status: int = 200) -> HttpResponse:
    response = _page(request, context, "placements/notice.html", {"message": message, "title": title or _("SMS")})
    response.status_code = status
    return response


def _user_client(context: FrameContext) -> PortalClient | None:
    """REST with the frame user's own token, so that Bitrix24 applies their permissions."""
    if not PortalToken.objects.filter(portal=context.portal, user_id=context.user_id).exists():
        return None
    return PortalClient(context.portal, user_id=context.user_id)


def _load(context: FrameContext, entity: Any, item_id: int) -> CrmItem | str:
    client = _user_client(context)
    if client is None:
        return _("Bitrix24 did not pass your sign-in to the app; reopen the widget.")
    try:
        return load_item(client, entity, item_id)
    except ItemUnavailable as exc:
        return exc.reason
    except B24Error as exc:
        if exc.retryable:
            return _("Bitrix24 is busy right now; try again in a minute.")
        return _("Bitrix24 refused to show this item (%(code)s).") % {"code": exc.code}


@frame_view
def crm_list_menu(request: HttpRequest, context: FrameContext) -> HttpResponse:
    entity = entity_for_placement(context.placement)
    if entity is None:
        return _notice(request, context, _("This widget does not work in %(placement)s.") %
                       {"placement": context.placement[:60]})
    raw_id = str(context.options.get("ID") or "")
    if not ITEM_ID_RE.match(raw_id):
        return _notice(request, context, _("Bitrix24 did not say which item was selected."))
    return _slider(request, context, entity, int(raw_id))


def _slider(request: HttpRequest, context: FrameContext, entity: CrmEntity, item_id: int, *,
            highlight: int | None = None) -> HttpResponse:
    """The item's SMS slider: its phones, the send form (with what other apps add to it), its history."""
    item = _load(context, entity, item_id)
    if isinstance(item, str):
        return _notice(request, context, item)
    accounts = list(accounts_for(context.portal).order_by("name"))
    token = context.token_for_item(entity.code, item.id)
    return _page(request, context, "placements/crm_list_menu.html", {
        "item": item, "entity": entity, "accounts": accounts, "highlight": highlight,
        "no_phones": not item.phones, "addons": extensions.slider_addons(context, item, token),
    }, token=token)


@frame_view
def app_uri(request: HttpRequest, context: FrameContext) -> HttpResponse:
    """REST_APP_URI: a link /marketplace/view/<app code>/?params[entity]=DEAL&params[id]=42&params[message]=7
    (written into the timeline comment of each widget send, placements.sending) opens the slider on that item
    with that message marked. A link that is not ours, or malformed, is a 400 page that says so; a message
    that is not this portal's message on that item is a 403 (the item itself is read with the user's token,
    so Bitrix24 decides whether they may see it)."""
    if context.placement != config.APP_URI_PLACEMENT:
        return _notice(request, context, _("This page only opens from a link of the SMS app."), status=400)
    options = context.options
    entity = ENTITIES.get(str(options.get("entity") or "").upper())
    raw_id, raw_message = str(options.get("id") or ""), str(options.get("message") or "")
    if entity is None or not ITEM_ID_RE.match(raw_id) or (raw_message and not ITEM_ID_RE.match(raw_message)):
        return _notice(request, context, _("This link does not say which CRM item and message to open; it may "
                                           "have been cut or changed."), status=400)
    item_id = int(raw_id)
    highlight = int(raw_message) if raw_message else None
    if highlight is not None and not messages_for_crm_item(
            context.portal, entity.owner_type_id, item_id).filter(pk=highlight).exists():
        return _notice(request, context, _("This message does not belong to this CRM item in this portal."),
                       status=403)
    return _slider(request, context, entity, item_id, highlight=highlight)


def _yes(value: Any) -> bool:
    return str(value or "").upper() == "Y"


@frame_view
def consent_field(request: HttpRequest, context: FrameContext) -> HttpResponse:
    options = context.options
    mode = str(options.get("MODE") or "view").lower()
    if mode not in ("view", "edit"):
        return _notice(request, context, _("Unknown field mode."))
    entity = entity_for_userfield(str(options.get("ENTITY_ID") or ""))
    raw_id = str(options.get("ENTITY_VALUE_ID") or "0")
    if not raw_id.isdigit():
        return _notice(request, context, _("Bitrix24 sent an item id that is not a number."))
    item_id = int(raw_id)
    phones: list[str] = []
    problem = ""
    token = None  # the page's own token cannot change consent: only one bound to the item shown
    if entity is None:
        problem = _("This field only works on CRM leads, deals, contacts and companies.")
    elif item_id > 0:
        item = _load(context, entity, item_id)
        if isinstance(item, str):
            problem = item
        else:
            phones = list(dict.fromkeys(phone.value for phone in item.phones))
            token = context.token_for_item(entity.code, item.id)
    decisions = consent_api.consent_for(context.portal, phones) if phones else {}
    rows = [{"phone": phone, "decision": decisions.get(phone)} for phone in phones]
    value = options.get("VALUE")
    return _page(request, context, "placements/consent_field.html", {
        "mode": mode, "rows": rows, "problem": problem, "new_card": item_id == 0,
        "multiple": _yes(options.get("MULTIPLE")), "mandatory": _yes(options.get("MANDATORY")),
        "field_name": str(options.get("FIELD_NAME") or "")[:50],
        "initial_value": value if isinstance(value, list | str) else "",
    }, token=token)


@frame_view
def app_page(request: HttpRequest, context: FrameContext) -> HttpResponse:
    if context.is_admin:
        bindings = Binding.objects.filter(portal=context.portal).order_by("kind", "code")
        return _page(request, context, "placements/app_admin.html", {
            "bindings": bindings, "addons": extensions.app_page_addons(context)})
    messages = messages_by_author(context.portal, context.user_id).select_related("account")[:50]
    return _page(request, context, "placements/app_user.html", {
        "messages": messages, "addons": extensions.app_page_addons(context)})
