"""Support-staff admin for bindings: each portal's widgets and field types and their state, with actions
that talk to the portal (rebind, unbind, add the consent fields)."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django_stubs_ext import StrOrPromise

from .models import Binding, TimelineComment
from .sending import do_requeue_timeline_comments
from .tasks import add_consent_fields, rebind_binding, unbind_binding


def portal_bindings_link(portal: object) -> str:
    """A link to one portal's bindings (for the portal admin page)."""
    url = reverse("admin:placements_binding_changelist") + f"?portal__id__exact={portal.pk}"  # type: ignore[attr-defined]
    return format_html('<a href="{}">{}</a>', url, _("Widgets and bindings"))


class ProblemFilter(admin.SimpleListFilter):
    title = _("needs attention")
    parameter_name = "problem"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, StrOrPromise]]:
        return [("yes", _("Missing or failing")), ("repaired", _("Repaired at least once"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Binding]) -> QuerySet[Binding]:
        if self.value() == "yes":
            return queryset.filter(state__in=[Binding.State.MISSING, Binding.State.ERROR])
        if self.value() == "repaired":
            return queryset.filter(repairs__gt=0)
        return queryset


@admin.register(Binding)
class BindingAdmin(admin.ModelAdmin):
    list_display = ("code", "kind", "portal_link", "state_badge", "last_checked_at", "repairs", "last_error_short")
    list_filter = ("state", "kind", ProblemFilter, "portal__status")
    list_select_related = ("portal",)
    search_fields = ("code", "portal__domain", "portal__member_id")
    search_help_text = _("Code, portal domain or member_id")
    raw_id_fields = ("portal",)
    readonly_fields = ("portal", "kind", "code", "handler", "state", "last_checked_at", "last_bound_at", "last_error",
                       "repairs", "created_at", "updated_at")
    list_per_page = 100
    actions = ["rebind", "unbind", "add_consent_fields"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from the portal (install steps and reconcile)

    @admin.display(description=_("portal"), ordering="portal__domain")
    def portal_link(self, obj: Binding) -> str:
        url = reverse("admin:tenants_portal_change", args=[obj.portal_id])
        return format_html('<a href="{}">{}</a>', url, obj.portal.domain)

    @admin.display(description=_("state"), ordering="state")
    def state_badge(self, obj: Binding) -> str:
        colors = {"bound": "#2b8a3e", "missing": "#c92a2a", "error": "#c92a2a", "pending": "#868e96",
                  "unbound": "#e8590c"}
        return format_html('<b style="color:{}">{}</b>', colors.get(obj.state, "#333"), obj.get_state_display())

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: Binding) -> str:
        if not obj.last_error:
            return "—"
        return format_html('<span title="{}">{}</span>', obj.last_error, obj.last_error[:60])

    @admin.action(description=_("Rebind now (bind and verify in the portal)"))
    def rebind(self, request: HttpRequest, queryset: QuerySet[Binding]) -> None:
        rows = list(queryset.exclude(kind=Binding.Kind.USERFIELD, state=Binding.State.BOUND).values_list("pk", flat=True))
        for pk in rows:
            rebind_binding.delay(pk, staff_user_id=request.user.pk)
        self.message_user(request, _("Rebind started for %(n)d binding(s).") % {"n": len(rows)}, messages.SUCCESS)

    @admin.action(description=_("Unbind from the portal (placement.unbind / userfieldtype.delete)"))
    def unbind(self, request: HttpRequest, queryset: QuerySet[Binding]) -> None:
        rows = list(queryset.exclude(kind=Binding.Kind.USERFIELD).exclude(state=Binding.State.UNBOUND)
                    .values_list("pk", flat=True))
        for pk in rows:
            unbind_binding.delay(pk, staff_user_id=request.user.pk)
        self.message_user(request, _("Unbind started for %(n)d binding(s); CRM fields are never deleted from here.")
                          % {"n": len(rows)}, messages.SUCCESS)

    @admin.action(description=_("Add the SMS-consent field to contacts and leads of these portals"))
    def add_consent_fields(self, request: HttpRequest, queryset: QuerySet[Binding]) -> None:
        portal_ids = sorted(set(queryset.values_list("portal_id", flat=True)))
        for portal_id in portal_ids:
            add_consent_fields.delay(portal_id, staff_user_id=request.user.pk)
        self.message_user(request, _("Started for %(n)d portal(s).") % {"n": len(portal_ids)}, messages.SUCCESS)


@admin.register(TimelineComment)
class TimelineCommentAdmin(admin.ModelAdmin):
    """The outbox of widget sends' CRM timeline comments: failed rows are what staff look at."""

    list_display = ("created_at", "portal_link", "entity", "item_id", "user_id", "state", "attempts",
                    "last_error_short", "done_at")
    list_filter = ("state", "entity", "portal__status")
    list_select_related = ("portal",)
    search_fields = ("portal__domain", "portal__member_id", "=item_id")
    search_help_text = _("Portal domain or member_id, or the CRM item id")
    raw_id_fields = ("portal", "message")
    readonly_fields = ("portal", "message", "user_id", "entity", "item_id", "comment", "state", "attempts",
                       "next_attempt_at", "claimed_at", "last_error", "created_at", "done_at")
    list_per_page = 100
    actions = ["send_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # rows come from widget sends

    @admin.display(description=_("portal"), ordering="portal__domain")
    def portal_link(self, obj: TimelineComment) -> str:
        url = reverse("admin:tenants_portal_change", args=[obj.portal_id])
        return format_html('<a href="{}">{}</a>', url, obj.portal.domain)

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: TimelineComment) -> str:
        if not obj.last_error:
            return "—"
        return format_html('<span title="{}">{}</span>', obj.last_error, obj.last_error[:60])

    @admin.action(description=_("Add the failed comments to the timeline again"))
    def send_again(self, request: HttpRequest, queryset: QuerySet[TimelineComment]) -> None:
        count = do_requeue_timeline_comments(queryset)
        self.message_user(request, _("%(n)d comment(s) queued again.") % {"n": count}, messages.SUCCESS)
