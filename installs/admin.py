"""Support-staff admin for portals and their install runs: health at a glance and actions that do real work
(verify with app.info, re-run install steps, block, unblock), and adding a portal by its incoming webhook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.decorators import method_decorator
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _
from django.views.decorators.debug import sensitive_post_parameters

from b24portal.crypto import mask
from oauth.models import WebhookCredential
from oauth.webhooks import WebhookRefused
from tenants import schedule
from tenants.actions import do_block_portal, do_unblock_portal
from tenants.journal import Actor
from tenants.models import InstallRun, InstallStepResult, JournalEntry, Portal

from . import actions
from .tasks import verify_portal
from .webhooks import WebhookPortalForm

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_stubs_ext import StrOrPromise


def _staff_user(request: HttpRequest) -> User:
    """The admin site serves only logged-in staff (AdminSite.has_permission), so its user is never anonymous."""
    return cast("User", request.user)


class JournalInline(admin.TabularInline):
    model = JournalEntry
    fields = ("created_at", "kind", "level", "message", "actor")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True
    ordering = ("-created_at", "-id")
    verbose_name_plural = _("journal (latest 50; see all via the journal list)")

    def get_queryset(self, request: HttpRequest) -> QuerySet[JournalEntry]:
        # Busy portals have thousands of entries: show the newest 50 (one query, a LIMITed subquery).
        queryset = super().get_queryset(request)
        object_id = (request.resolver_match.kwargs.get("object_id") if request.resolver_match else None)
        if object_id and str(object_id).isdigit():
            latest = JournalEntry.objects.filter(portal_id=int(object_id)).order_by("-created_at", "-id")
            queryset = queryset.filter(pk__in=Subquery(latest.values("pk")[:50]))
        return queryset


class InstallRunInline(admin.TabularInline):
    model = InstallRun
    fields = ("created_at", "trigger", "status", "finished_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = True


@admin.register(Portal)
class PortalAdmin(admin.ModelAdmin):
    list_display = ("domain", "connection", "member_id", "status_badge", "license", "app_status",
                    "installed_version", "installed_at", "last_problem_short")
    list_filter = ("status", "connection", "license_family", "app_status", "rate_plan")
    search_fields = ("domain", "member_id")
    search_help_text = _("Domain or member_id")
    date_hierarchy = "created_at"
    ordering = ("domain",)
    list_per_page = 50
    show_full_result_count = False
    actions = ["verify_now", "rerun_install_steps", "run_checks_now", "block", "unblock"]
    change_list_template = "installs/admin/portal_change_list.html"
    readonly_fields = (
        "member_id", "domain", "connection", "rest_endpoint", "status", "status_changed_at", "blocked_reason", "app_local_id",
        "app_code", "app_status", "app_installed", "license", "license_type", "license_family", "payment_expired",
        "payment_days", "app_info_checked_at", "installed_version", "language", "installed_by_user_id",
        "installed_by_name", "install_started_at", "installed_at", "uninstalled_at", "application_token_state",
        "handler_key_masked", "rate_plan", "last_problem", "last_problem_at", "created_at", "updated_at",
        "journal_link", "webhook_user", "webhook_secret_masked", "webhook_scopes", "webhook_verified_at",
        "webhook_refused",
    )
    fieldsets = (
        (None, {"fields": ("domain", "connection", "member_id", "rest_endpoint", "status", "status_changed_at", "blocked_reason",
                           "last_problem", "last_problem_at", "journal_link")}),
        (_("Application (from app.info)"), {"fields": (
            "app_local_id", "app_code", "app_status", "app_installed", "installed_version", "license",
            "license_type", "license_family", "payment_expired", "payment_days", "app_info_checked_at")}),
        (_("Installation"), {"fields": ("language", "phone_region", "installed_by_user_id", "installed_by_name",
                                        "install_started_at", "installed_at", "uninstalled_at")}),
        (_("Security and limits"), {"fields": ("application_token_state", "handler_key_masked", "rate_plan")}),
        (_("Record"), {"fields": ("created_at", "updated_at")}),
    )
    webhook_fieldset: Any = (_("Incoming webhook"), {"fields": (
        "webhook_user", "webhook_secret_masked", "webhook_scopes", "webhook_verified_at", "webhook_refused")})
    inlines = [InstallRunInline, JournalInline]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # portals come from Bitrix24 installs, or from "Add portal by incoming webhook"

    def get_fieldsets(self, request: HttpRequest, obj: Portal | None = None) -> Any:
        fieldsets = list(super().get_fieldsets(request, obj))
        if obj is not None and obj.is_webhook:
            fieldsets.insert(1, self.webhook_fieldset)
        return fieldsets

    def get_urls(self) -> list[Any]:
        add_webhook = self.admin_site.admin_view(self.add_webhook_view)
        return [path("add-webhook/", add_webhook, name="tenants_portal_add_webhook"), *super().get_urls()]

    @method_decorator(sensitive_post_parameters("url"))  # error reports never show the webhook's secret
    def add_webhook_view(self, request: HttpRequest) -> HttpResponse:
        """Add (or re-connect) a portal by its incoming-webhook URL: proven before anything is stored."""
        if not self.has_change_permission(request):
            return HttpResponse(status=403)
        form = WebhookPortalForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                portal = form.save(_staff_user(request))
            except WebhookRefused as exc:
                form.add_error("url", exc.reason)
            else:
                self.message_user(request, _("%(domain)s is connected by its incoming webhook.")
                                  % {"domain": portal.domain}, messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:tenants_portal_change", args=[portal.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "form": form,
                   "title": _("Add portal by incoming webhook")}
        return TemplateResponse(request, "installs/admin/add_webhook.html", context)

    def _webhook(self, obj: Portal) -> WebhookCredential | None:
        return WebhookCredential.objects.filter(portal=obj).first() if obj.is_webhook else None

    @admin.display(description=_("webhook user"))
    def webhook_user(self, obj: Portal) -> str:
        hook = self._webhook(obj)
        if hook is None:
            return "—"
        role = _("administrator") if hook.is_admin else _("not an administrator")
        return f"{hook.user_id} {hook.user_name} ({role})"

    @admin.display(description=_("webhook secret"))
    def webhook_secret_masked(self, obj: Portal) -> str:
        hook = self._webhook(obj)
        return mask(hook.secret) if hook is not None else "—"

    @admin.display(description=_("webhook scopes"))
    def webhook_scopes(self, obj: Portal) -> str:
        hook = self._webhook(obj)
        return ", ".join(hook.scopes) if hook is not None and hook.scopes else "—"

    @admin.display(description=_("webhook proven at"))
    def webhook_verified_at(self, obj: Portal) -> Any:
        hook = self._webhook(obj)
        return hook.verified_at if hook is not None else "—"

    @admin.display(description=_("refused by Bitrix24"))
    def webhook_refused(self, obj: Portal) -> str:
        hook = self._webhook(obj)
        if hook is None or hook.refused_at is None:
            return "—"
        return f"{hook.refused_at:%Y-%m-%d %H:%M} {hook.refused_error}"

    def _skip_webhook_portals(self, request: HttpRequest, queryset: QuerySet[Portal], what: str) -> QuerySet[Portal]:
        """App-only actions leave webhook portals out, and say so."""
        skipped = queryset.filter(connection=Portal.Connection.WEBHOOK).count()
        if skipped:
            self.message_user(request, _("%(n)d webhook-connected portal(s) skipped: %(what)s needs the installed "
                                         "app.") % {"n": skipped, "what": what}, messages.WARNING)
        return queryset.filter(connection=Portal.Connection.APP)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # uninstall is Bitrix24's decision; the journal must survive

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Portal) -> str:
        colors = {"active": "#2b8a3e", "new": "#1971c2", "blocked": "#e8590c", "needs_reinstall": "#c92a2a",
                  "deleted": "#868e96"}
        label: StrOrPromise = obj.get_status_display()
        if obj.is_webhook and obj.status == Portal.Status.NEEDS_REINSTALL:
            label = _("Needs a new webhook URL")  # Bitrix24 refused the webhook: staff paste its new URL
        return format_html('<b style="color:{}">{}</b>', colors.get(obj.status, "#333"), label)

    @admin.display(description=_("last problem"), ordering="last_problem_at")
    def last_problem_short(self, obj: Portal) -> str:
        if not obj.last_problem:
            return "—"
        return format_html('<span title="{}">{}</span>', obj.last_problem,
                           obj.last_problem[:60] + ("…" if len(obj.last_problem) > 60 else ""))

    @admin.display(description=_("application token"))
    def application_token_state(self, obj: Portal) -> StrOrPromise:
        return _("stored (hash only)") if obj.application_token_hash else _("not received yet")

    @admin.display(description=_("handler key"))
    def handler_key_masked(self, obj: Portal) -> str:
        return mask(obj.handler_key)

    @admin.display(description=_("journal and bindings"))
    def journal_link(self, obj: Portal) -> str:
        # Higher floors' admin lists are reached by URL name only: this app does not import them.
        links = [(reverse("admin:tenants_journalentry_changelist"), _("All journal entries"))]
        for name, label in (("admin:placements_binding_changelist", _("Widget bindings")),
                            ("admin:messageservice_provideraccount_changelist", _("SMS provider accounts")),
                            ("admin:messageservice_message_changelist", _("SMS messages"))):
            try:
                links.append((reverse(name), label))
            except NoReverseMatch:
                continue
        return format_html_join(" · ", '<a href="{}?portal__id__exact={}">{}</a>',
                                ((url, obj.pk, label) for url, label in links))

    @admin.action(description=_("Verify now (app.info)"))
    def verify_now(self, request: HttpRequest, queryset: QuerySet[Portal]) -> None:
        count = 0
        queryset = self._skip_webhook_portals(request, queryset, "app.info")
        for portal in queryset.exclude(status=Portal.Status.DELETED).only("pk"):
            verify_portal.delay(portal.pk, staff_user_id=request.user.pk)
            count += 1
        self.message_user(request, _("Verification queued for %(n)d portal(s).") % {"n": count}, messages.SUCCESS)

    @admin.action(description=_("Re-run install steps"))
    def rerun_install_steps(self, request: HttpRequest, queryset: QuerySet[Portal]) -> None:
        count, user = 0, _staff_user(request)
        queryset = self._skip_webhook_portals(request, queryset, "install steps")
        for portal in queryset.exclude(status=Portal.Status.DELETED):
            actions.do_start_install_run(portal, trigger=InstallRun.Trigger.STAFF,
                                         actor=Actor.staff(user), staff_user=user)
            count += 1
        self.message_user(request, _("Install steps started for %(n)d portal(s).") % {"n": count}, messages.SUCCESS)

    @admin.action(description=_("Run periodic checks now (senders, bindings, capabilities)"))
    def run_checks_now(self, request: HttpRequest, queryset: QuerySet[Portal]) -> None:
        portals = list(queryset.filter(status=Portal.Status.ACTIVE))
        for portal in portals:
            schedule.mark_due(portal, *schedule.kinds_for(portal))  # a webhook portal: capabilities only
        self.message_user(request, _("Checks are due now for %(n)d portal(s); the next beat tick runs them.")
                          % {"n": len(portals)}, messages.SUCCESS)

    @admin.action(description=_("Block"))
    def block(self, request: HttpRequest, queryset: QuerySet[Portal]) -> None:
        count = sum(do_block_portal(p, reason="blocked by support", staff_user=_staff_user(request))
                    for p in queryset)
        self.message_user(request, _("%(n)d portal(s) blocked.") % {"n": count}, messages.SUCCESS)

    @admin.action(description=_("Unblock"))
    def unblock(self, request: HttpRequest, queryset: QuerySet[Portal]) -> None:
        count = sum(do_unblock_portal(p, staff_user=_staff_user(request)) for p in queryset)
        self.message_user(request, _("%(n)d portal(s) unblocked.") % {"n": count}, messages.SUCCESS)


class InstallStepInline(admin.TabularInline):
    model = InstallStepResult
    fields = ("order", "name", "title", "status", "attempts", "message", "finished_at")
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(InstallRun)
class InstallRunAdmin(admin.ModelAdmin):
    list_display = ("created_at", "portal", "trigger", "status", "finished_at")
    list_filter = ("status", "trigger")
    search_fields = ("portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    readonly_fields = ("public_id", "portal", "trigger", "status", "created_at", "finished_at")
    inlines = [InstallStepInline]
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
