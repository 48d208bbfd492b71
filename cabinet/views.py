"""The personal cabinet's pages: my SMS, SMS templates, and (administrators) the portal's providers,
delivery statistics, records API keys and sync jobs. Every view takes a `Visit` (access.py): the
same pages serve a frame and a signed-in session. Thin: read through the scoped getters, act through the
`do_*` functions, render."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from messageservice.accounts import accounts_for, do_deactivate_account
from messageservice.sending import messages_by_author
from messageservice.stats import delivery_stats
from placements import config as placements_config
from placements import extensions
from placements.crm import ENTITIES
from records.jobs import job_state_counts, jobs_for
from records.keys import api_keys_for, do_create_api_key, do_revoke_api_key
from records.models import SyncJob
from tenants.journal import Actor

from . import placeholders
from .access import Visit, cabinet_view
from .sms_templates import TemplateForbidden, do_delete_template, do_save_template, may_edit, templates_for

MESSAGES_PER_PAGE = 25
JOBS_PER_PAGE = 50
STATS_DAYS = 14
OWNER_TYPES = {entity.owner_type_id: entity for entity in ENTITIES.values()}
# How a message's CRM item is named in its link (Bitrix24's own words for them).
ENTITY_LABELS = {"LEAD": gettext_lazy("Lead"), "DEAL": gettext_lazy("Deal"), "CONTACT": gettext_lazy("Contact"),
                 "COMPANY": gettext_lazy("Company")}


def _tabs(visit: Visit, current: str) -> list[dict[str, str]]:
    tabs = [("messages", "cabinet-home", _("My SMS")), ("templates", "cabinet-templates", _("SMS templates"))]
    if visit.is_admin:
        tabs.append(("portal", "cabinet-portal", _("Portal: providers and statistics")))
    return [{"url": reverse(url), "label": label, "css": "current" if name == current else ""}
            for name, url, label in tabs]


def _page(request: HttpRequest, visit: Visit, template: str, context: dict[str, Any], *,
          tab: str, status: int = 200) -> HttpResponse:
    # The page's own API calls use the frame token in a frame; on our site the page makes none.
    frame_config = {"token": visit.token if visit.framed else "", "lang": visit.principal.lang,
                    "userId": visit.user_id, "isAdmin": visit.is_admin}
    return render(request, template, {
        "visit": visit, "portal": visit.portal, "tab": tab, "tabs": _tabs(visit, tab), "lang": visit.principal.lang,
        "bx24_sdk_url": placements_config.sdk_url(), "frame_config": frame_config, **context,
    }, status=status)


def _notice(request: HttpRequest, visit: Visit, message: str, *, status: int, tab: str = "") -> HttpResponse:
    return _page(request, visit, "cabinet/notice.html", {"message": message}, tab=tab, status=status)


def _done(request: HttpRequest, visit: Visit, url_name: str, then: Any) -> HttpResponse:
    """After a change: a redirect on our site (reload-safe); in a frame the next page at once (a redirect
    would lose the frame token, which travels in the POST body)."""
    if visit.framed:
        return then()
    return redirect(reverse(url_name))


def _page_number(request: HttpRequest) -> int:
    raw = request.GET.get("page", "1")
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 else 1


# -- every user ------------------------------------------------------------------------------------------------
@cabinet_view
def my_messages(request: HttpRequest, visit: Visit) -> HttpResponse:
    """The SMS this user sent (from the widget, or as the author Bitrix24 named), newest first, with their
    delivery history; three queries whatever the page size (count, page with its account, CRM links)."""
    rows = messages_by_author(visit.portal, visit.user_id).select_related("account").prefetch_related("crm_links")
    page = Paginator(rows, MESSAGES_PER_PAGE).get_page(_page_number(request))
    lines = [{"message": message, "crm_items": [
        {"entity": OWNER_TYPES[link.owner_type_id].code, "id": link.owner_id,
         "label": ENTITY_LABELS.get(OWNER_TYPES[link.owner_type_id].code, OWNER_TYPES[link.owner_type_id].code),
         "url": f"{visit.portal.origin}/crm/{OWNER_TYPES[link.owner_type_id].code.lower()}/details/{link.owner_id}/"}
        for link in message.crm_links.all() if link.owner_type_id in OWNER_TYPES]} for message in page.object_list]
    base = reverse("cabinet-home")
    return _page(request, visit, "cabinet/messages.html", {
        "page": page, "lines": lines,
        "prev_url": f"{base}?page={page.previous_page_number()}" if page.has_previous() else "",
        "next_url": f"{base}?page={page.next_page_number()}" if page.has_next() else "",
    }, tab="messages")


def _templates_page(request: HttpRequest, visit: Visit, *, errors: dict[str, list[str]] | None = None,
                    form: dict[str, Any] | None = None, note: str = "", status: int = 200) -> HttpResponse:
    rows = [{"template": t, "editable": may_edit(visit.principal, t)} for t in templates_for(visit.portal,
                                                                                              visit.user_id)]
    return _page(request, visit, "cabinet/templates.html", {
        "rows": rows, "errors": errors or {}, "form": form or {}, "note": note,
        "placeholders": placeholders.PLACEHOLDERS.values(),
    }, tab="templates", status=status)


@cabinet_view
def templates(request: HttpRequest, visit: Visit) -> HttpResponse:
    """The user's templates and the portal's; POST action=save adds one (portal-wide: administrators only,
    by the principal's proven admin flag; a `portal_wide` field from anyone else is a 403)."""
    if request.method == "POST" and request.POST.get("action") == "save":
        portal_wide = request.POST.get("scope") == "portal"
        form = {"name": request.POST.get("name", ""), "body": request.POST.get("body", ""), "portal_wide": portal_wide}
        try:
            do_save_template(visit.principal, name=form["name"], body=form["body"], portal_wide=portal_wide)
        except TemplateForbidden as exc:
            return _notice(request, visit, exc.reason, status=403, tab="templates")
        except ValidationError as exc:
            return _templates_page(request, visit, errors=exc.message_dict, form=form, status=400)
        return _done(request, visit, "cabinet-templates",
                     lambda: _templates_page(request, visit, note=_("Template saved.")))
    return _templates_page(request, visit)


@cabinet_view
def template_detail(request: HttpRequest, visit: Visit, pk: int) -> HttpResponse:
    """One template: its edit form (POST action=save) and delete (POST action=delete). Another user's
    personal template or another portal's is not found (404); a portal-wide one is edited by administrators
    only (403 for anyone else)."""
    template = templates_for(visit.portal, visit.user_id).filter(pk=pk).first()
    if template is None:
        return _notice(request, visit, _("No such template."), status=404, tab="templates")
    action = request.POST.get("action") if request.method == "POST" else None
    if not may_edit(visit.principal, template):
        if action is not None:
            return _notice(request, visit, _("Only portal administrators may change the portal's shared templates."),
                           status=403, tab="templates")
        return _page(request, visit, "cabinet/template_detail.html", {"template": template, "editable": False,
                                                                      "errors": {}, "form": {}}, tab="templates")
    if action == "delete":
        do_delete_template(visit.principal, template)
        return _done(request, visit, "cabinet-templates",
                     lambda: _templates_page(request, visit, note=_("Template deleted.")))
    if action == "save":
        form = {"name": request.POST.get("name", ""), "body": request.POST.get("body", "")}
        try:
            do_save_template(visit.principal, name=form["name"], body=form["body"], template=template)
        except TemplateForbidden as exc:
            return _notice(request, visit, exc.reason, status=403, tab="templates")
        except ValidationError as exc:
            return _page(request, visit, "cabinet/template_detail.html", {
                "template": template, "editable": True, "errors": exc.message_dict, "form": form,
                "placeholders": placeholders.PLACEHOLDERS.values()}, tab="templates", status=400)
        return _done(request, visit, "cabinet-templates",
                     lambda: _templates_page(request, visit, note=_("Template saved.")))
    return _page(request, visit, "cabinet/template_detail.html", {
        "template": template, "editable": True, "errors": {}, "form": {"name": template.name, "body": template.body},
        "placeholders": placeholders.PLACEHOLDERS.values()}, tab="templates")


# -- portal administrators ---------------------------------------------------------------------------------------
def _portal_page(request: HttpRequest, visit: Visit, *, note: str = "") -> HttpResponse:
    accounts = list(accounts_for(visit.portal, active_only=False).order_by("-is_active", "name"))
    return _page(request, visit, "cabinet/portal.html", {
        "accounts": accounts, "stats": delivery_stats(days=STATS_DAYS, portal_id=visit.portal.pk),
        "stats_days": STATS_DAYS, "note": note, "sections": extensions.portal_sections(visit.principal),
        "deep_link_example": placements_config.deep_link(visit.portal, {"entity": "DEAL", "id": "1"}),
    }, tab="portal")


@cabinet_view
def portal_admin(request: HttpRequest, visit: Visit) -> HttpResponse:
    """Administrators: the portal's SMS providers (deactivate here; add and edit on the app page), delivery
    statistics (the staff admin's own `delivery_stats`, for this portal), and the sibling cards of
    placements.extensions (the records API's keys and sync jobs, records_card.py). Anyone else: 403."""
    if not visit.is_admin:
        return _notice(request, visit, _("Only portal administrators see this page."), status=403, tab="portal")
    if request.method == "POST" and request.POST.get("action") == "deactivate":
        raw = request.POST.get("account", "")
        account = (accounts_for(visit.portal, active_only=False).filter(pk=int(raw)).first()
                   if raw.isdigit() and len(raw) < 19 else None)
        if account is None:
            return _notice(request, visit, _("No such provider account."), status=404, tab="portal")
        do_deactivate_account(visit.portal, account, actor=Actor.portal_user(visit.user_id))
        return _done(request, visit, "cabinet-portal",
                     lambda: _portal_page(request, visit, note=_("Provider deactivated.")))
    return _portal_page(request, visit)



def _not_admin(request: HttpRequest, visit: Visit) -> HttpResponse:
    return _notice(request, visit, _("Only portal administrators see this page."), status=403, tab="portal")


@cabinet_view
def api_keys(request: HttpRequest, visit: Visit) -> HttpResponse:
    """Administrators: POST action=create makes a records API key and shows it on the answer, once (only its
    hash is kept); action=revoke with `key` revokes one of this portal's keys (another portal's: 404).
    Callback URLs stay with staff: a portal must not point our outbound POSTs at an address of its choosing."""
    if not visit.is_admin:
        return _not_admin(request, visit)
    action = request.POST.get("action") if request.method == "POST" else None
    actor = Actor.portal_user(visit.user_id)
    if action == "create":
        name = request.POST.get("name", "")
        try:
            api_key, raw_key = do_create_api_key(visit.portal, name=name, actor=actor)
        except ValidationError as exc:
            return _notice(request, visit, "; ".join(exc.messages), status=400, tab="portal")
        return _page(request, visit, "cabinet/api_key_created.html", {"api_key": api_key, "raw_key": raw_key},
                     tab="portal")
    if action == "revoke":
        raw = request.POST.get("key", "")
        found = api_keys_for(visit.portal).filter(pk=int(raw)).first() if raw.isdigit() and len(raw) < 19 else None
        if found is None:
            return _notice(request, visit, _("No such API key."), status=404, tab="portal")
        do_revoke_api_key(visit.portal, found, actor=actor)
        return _done(request, visit, "cabinet-portal", lambda: _portal_page(request, visit, note=_("API key revoked.")))
    return _notice(request, visit, _("Create or revoke keys with the buttons on the portal page."), status=400,
                   tab="portal")


@cabinet_view
def sync_jobs(request: HttpRequest, visit: Visit) -> HttpResponse:
    """Administrators: the portal's sync jobs, newest first, 50 a page, optionally of one state (?state=),
    with how many are in each state; three queries whatever the page (counts, page count, page with records)."""
    if not visit.is_admin:
        return _not_admin(request, visit)
    state = request.GET.get("state", "")
    state = state if state in SyncJob.State.values else ""
    page = Paginator(jobs_for(visit.portal, state=state), JOBS_PER_PAGE).get_page(_page_number(request))
    counts = job_state_counts(visit.portal)
    base = reverse("cabinet-sync-jobs")
    query = f"state={state}&" if state else ""
    return _page(request, visit, "cabinet/sync_jobs.html", {
        "page": page, "state": state,
        "state_counts": [{"state": value, "label": label, "count": counts[value],
                          "url": f"{base}?state={value}"} for value, label in SyncJob.State.choices],
        "all_url": base,
        "prev_url": f"{base}?{query}page={page.previous_page_number()}" if page.has_previous() else "",
        "next_url": f"{base}?{query}page={page.next_page_number()}" if page.has_next() else "",
    }, tab="portal")
