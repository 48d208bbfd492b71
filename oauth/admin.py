"""Tokens, the REST call log (with its chart) and portal capabilities in admin.

Tokens: only masked values and expiry, never a secret. Lists select their portal in the same query
(no N+1) and skip the full COUNT on the big call log.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Any, cast

from django.contrib import admin, messages
from django.db.models import QuerySet, Sum
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from b24portal.crypto import mask
from b24portal.dispatch import dispatch_on_commit
from tenants.journal import Actor
from tenants.models import Portal

from . import calllog, confirmation
from .models import ParkedCall, PortalCapabilities, PortalToken, RestCall, RestCallDaily
from .tasks import check_capabilities

if TYPE_CHECKING:
    from django.contrib.auth.models import User
    from django_stubs_ext import StrOrPromise

CHART_DAYS = 30


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ParkedCall)
class ParkedCallAdmin(ReadOnlyAdmin):
    """Work waiting for a portal administrator to confirm a REST method (oauth.confirmation): what waits, since
    when, and how it ended. Only a hash of the access token is kept."""

    list_display = ("parked_at", "portal", "method", "task_name", "state", "decided_at", "reason")
    list_filter = ("state", "method")
    search_fields = ("portal__domain", "portal__member_id", "method", "task_name")
    list_select_related = ("portal",)
    raw_id_fields = ("portal",)
    date_hierarchy = "parked_at"
    fields = ("portal", "method", "task_name", "args", "kwargs", "state", "reason", "parked_at", "decided_at")
    readonly_fields = fields
    actions = ["give_up"]

    @admin.action(description=_("Give up on the selected waiting calls (fail them)"))
    def give_up(self, request: HttpRequest, queryset: QuerySet[ParkedCall]) -> None:
        failed = confirmation.do_fail_by_staff(queryset, Actor.staff(cast("User", request.user)))
        self.message_user(request, f"{failed} waiting call(s) failed", messages.SUCCESS)


@admin.register(PortalToken)
class PortalTokenAdmin(ReadOnlyAdmin):
    list_display = ("portal", "user_id", "is_service", "is_admin", "access_masked", "expires_at", "refreshed_at",
                    "refresh_count", "last_refresh_error")
    list_filter = ("is_service", "is_admin")
    search_fields = ("portal__domain", "portal__member_id", "=user_id")
    list_select_related = ("portal",)
    raw_id_fields = ("portal",)
    fields = ("portal", "user_id", "is_service", "is_admin", "access_masked", "refresh_masked", "expires_at",
              "scope", "refreshed_at", "refresh_count", "last_refresh_error", "created_at", "updated_at")
    readonly_fields = fields
    show_full_result_count = False

    @admin.display(description=_("access token"))
    def access_masked(self, obj: PortalToken) -> str:
        return mask(obj.access_token)

    @admin.display(description=_("refresh token"))
    def refresh_masked(self, obj: PortalToken) -> str:
        return mask(obj.refresh_token)


class PortalFilter(admin.SimpleListFilter):
    """Per-portal view (`?portal=<id>`) without listing every portal as a choice."""

    title = _("portal")
    parameter_name = "portal"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        if value and value.isdigit():
            portal = Portal.objects.filter(pk=int(value)).only("domain", "member_id").first()
            if portal is not None:
                return [(value, str(portal))]
        return []

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(portal_id=int(value))
        return queryset


class OutcomeFilter(admin.SimpleListFilter):
    title = _("outcome")
    parameter_name = "outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, StrOrPromise]]:
        return [("ok", _("success")), ("error", _("error"))]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        if self.value() == "ok":
            return queryset.filter(error_code="")
        if self.value() == "error":
            return queryset.exclude(error_code="")
        return queryset


@admin.register(RestCall)
class RestCallAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "portal", "method", "batch_size", "http_status", "error_code", "duration_ms",
                    "operating")
    list_filter = (OutcomeFilter, PortalFilter, "http_status")
    search_fields = ("portal__domain", "portal__member_id", "method", "=error_code")
    list_select_related = ("portal",)
    raw_id_fields = ("portal",)
    date_hierarchy = "created_at"
    show_full_result_count = False
    list_per_page = 100


@admin.register(RestCallDaily)
class RestCallDailyAdmin(ReadOnlyAdmin):
    change_list_template = "oauth/admin/restcalldaily_change_list.html"
    list_display = ("day", "portal", "method", "outcome", "calls", "commands", "avg_duration", "max_duration_ms")
    list_filter = (OutcomeFilter, PortalFilter, "day")
    search_fields = ("portal__domain", "portal__member_id", "method", "=error_code")
    list_select_related = ("portal",)
    raw_id_fields = ("portal",)
    show_full_result_count = False
    actions = ["rebuild_recent"]

    @admin.display(description=_("error code"), ordering="error_code")
    def outcome(self, obj: RestCallDaily) -> str:
        return obj.error_code or "ok"

    @admin.display(description=_("avg ms"))
    def avg_duration(self, obj: RestCallDaily) -> int:
        return obj.avg_duration_ms

    @admin.action(description=_("Rebuild today's and yesterday's roll-ups (all portals)"))
    def rebuild_recent(self, request: HttpRequest, queryset: QuerySet[RestCallDaily]) -> None:
        today = timezone.localdate()
        rows = calllog.rollup_day(today - timedelta(days=1)) + calllog.rollup_day(today)
        self.message_user(request, f"{rows} roll-up rows rebuilt", messages.SUCCESS)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        response = super().changelist_view(request, extra_context)
        context = getattr(response, "context_data", None)
        if not context or "cl" not in context:
            return response
        cl = context["cl"]
        since = timezone.localdate() - timedelta(days=CHART_DAYS - 1)
        # One aggregate query over the filtered queryset (the list's own filters and search apply).
        rows = (cl.queryset.order_by().filter(day__gte=since).values("day", "error_code")
                .annotate(calls=Sum("calls")))
        portal = next((spec for spec in cl.filter_specs if isinstance(spec, PortalFilter) and spec.value()), None)
        context["chart"] = calllog.chart_svg(calllog.chart_data(rows, days=CHART_DAYS))
        context["chart_days"] = CHART_DAYS
        context["chart_title"] = _("REST calls and errors per day") + (
            f" — {portal.lookup_choices[0][1]}" if portal and portal.lookup_choices else " — all portals")
        return response


@admin.register(PortalCapabilities)
class PortalCapabilitiesAdmin(ReadOnlyAdmin):
    list_display = ("portal", "ok", "missing_summary", "offline_events", "auth_connector", "checked_at", "error",
                    "calls_chart")
    list_filter = ("ok",)
    search_fields = ("portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    fields = ("portal", "ok", "missing", "scopes", "methods", "features", "checked_at", "error")
    readonly_fields = fields
    actions = ["check_now"]

    @admin.display(description=_("missing"))
    def missing_summary(self, obj: PortalCapabilities) -> str:
        return "; ".join(obj.missing)[:200] or "-"

    @admin.display(description=_("offline events"), boolean=True)
    def offline_events(self, obj: PortalCapabilities) -> bool:
        return obj.has_feature("rest_offline_extended")

    @admin.display(description=_("auth connector"), boolean=True)
    def auth_connector(self, obj: PortalCapabilities) -> bool:
        return obj.has_feature("rest_auth_connector")

    @admin.display(description=_("REST chart"))
    def calls_chart(self, obj: PortalCapabilities) -> str:
        return format_html('<a href="../restcalldaily/?portal={}">chart</a>', obj.portal_id)

    @admin.action(description=_("Check capabilities now"))
    def check_now(self, request: HttpRequest, queryset: QuerySet[PortalCapabilities]) -> None:
        ids = list(queryset.values_list("portal_id", flat=True))
        for portal_id in ids:
            dispatch_on_commit(check_capabilities, portal_id)
        self.message_user(request, f"capability check queued for {len(ids)} portal(s)", messages.SUCCESS)
