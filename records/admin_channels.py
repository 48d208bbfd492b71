"""Admin of the AMQP bindings (which queue feeds which portal) and of the offline-event feeds (whether a
portal's changes flow back, and how that goes). Registered from RecordsConfig.ready()."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from tenants import schedule

from .amqp import QUEUE_NAME_RE
from .channels import AmqpBinding, OfflineFeed
from .offline import OFFLINE_CHECK


def _portal_link(portal: Any) -> str:
    url = reverse("admin:tenants_portal_change", args=[portal.pk])
    return format_html('<a href="{}">{}</a>', url, portal.domain)


class AmqpBindingForm(forms.ModelForm):
    class Meta:
        model = AmqpBinding
        fields = ("portal", "queue", "enabled")

    def clean_queue(self) -> str:
        queue = str(self.cleaned_data.get("queue") or "").strip()
        if not QUEUE_NAME_RE.match(queue) or queue.startswith("amq."):
            raise forms.ValidationError(_("A queue name: letters, digits and . _ - : / @, at most 255 characters, "
                                          "not starting with amq. (reserved by RabbitMQ)"))
        return queue


@admin.register(AmqpBinding)
class AmqpBindingAdmin(admin.ModelAdmin):
    form = AmqpBindingForm
    list_display = ("queue", "portal_link", "enabled", "accepted_count", "rejected_count", "last_message_at",
                    "last_rejection_short")
    list_filter = ("enabled", "portal__status")
    list_select_related = ("portal",)
    search_fields = ("queue", "portal__domain", "portal__member_id")
    search_help_text = _("Queue, portal domain or member_id")
    raw_id_fields = ("portal",)
    readonly_fields = ("accepted_count", "rejected_count", "last_message_at", "last_rejection", "created_at")
    actions = ["enable", "disable"]

    @admin.display(description=_("portal"), ordering="portal__domain")
    def portal_link(self, obj: AmqpBinding) -> str:
        return _portal_link(obj.portal)

    @admin.display(description=_("last rejection"))
    def last_rejection_short(self, obj: AmqpBinding) -> str:
        if not obj.last_rejection:
            return "—"
        return format_html('<span title="{}">{}</span>', obj.last_rejection, obj.last_rejection[:60])

    @admin.action(description=_("Enable (the consumer reads these queues within 30 s)"))
    def enable(self, request: HttpRequest, queryset: QuerySet[AmqpBinding]) -> None:
        count = queryset.update(enabled=True)
        self.message_user(request, _("%(n)d queue(s) enabled.") % {"n": count}, messages.SUCCESS)

    @admin.action(description=_("Disable (messages wait in the queue)"))
    def disable(self, request: HttpRequest, queryset: QuerySet[AmqpBinding]) -> None:
        count = queryset.update(enabled=False)
        self.message_user(request, _("%(n)d queue(s) disabled.") % {"n": count}, messages.SUCCESS)


@admin.register(OfflineFeed)
class OfflineFeedAdmin(admin.ModelAdmin):
    list_display = ("portal_link", "status_badge", "auth_connector_shown", "events_processed", "changes_sent",
                    "events_failed", "last_polled_at", "detail", "last_error")
    list_filter = ("status", "portal__status")
    list_select_related = ("portal",)
    search_fields = ("portal__domain", "portal__member_id")
    search_help_text = _("Portal domain or member_id")
    readonly_fields = ("portal", "status", "auth_connector", "process_id", "detail", "checked_at", "last_polled_at",
                       "events_processed", "changes_sent", "events_failed", "last_error")
    actions = ["poll_now"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the install step writes these rows

    @admin.display(description=_("portal"), ordering="portal__domain")
    def portal_link(self, obj: OfflineFeed) -> str:
        return _portal_link(obj.portal)

    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: OfflineFeed) -> str:
        colors = {"bound": "#2b8a3e", "failed": "#c92a2a", "unavailable": "#868e96"}
        return format_html('<b style="color:{}">{}</b>', colors.get(obj.status, "#333"), obj.get_status_display())

    @admin.display(description=_("auth_connector"))
    def auth_connector_shown(self, obj: OfflineFeed) -> str:
        return obj.auth_connector or "— (own writes told apart by state)"

    @admin.action(description=_("Read their offline events now"))
    def poll_now(self, request: HttpRequest, queryset: QuerySet[OfflineFeed]) -> None:
        feeds = list(queryset.filter(status=OfflineFeed.Status.BOUND).select_related("portal"))
        for feed in feeds:
            schedule.mark_due(feed.portal, OFFLINE_CHECK)
        self.message_user(request, _("%(n)d portal(s) will be read on the next tick.") % {"n": len(feeds)},
                          messages.SUCCESS)
