from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import SmsTemplate


class ScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("portal", "Portal-wide"), ("personal", "Personal")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[SmsTemplate]) -> QuerySet[SmsTemplate]:
        if self.value() == "portal":
            return queryset.filter(owner_user_id__isnull=True)
        if self.value() == "personal":
            return queryset.filter(owner_user_id__isnull=False)
        return queryset


@admin.register(SmsTemplate)
class SmsTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "portal", "scope", "owner_user_id", "updated_by_user_id", "updated_at")
    list_filter = (ScopeFilter, "updated_at")
    search_fields = ("name", "body", "portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    readonly_fields = ("created_by_user_id", "updated_by_user_id", "created_at", "updated_at")
    raw_id_fields = ("portal",)

    @admin.display(description="scope")
    def scope(self, template: SmsTemplate) -> str:
        return "portal-wide" if template.is_portal_wide else "personal"
