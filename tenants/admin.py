"""Support-staff admin for the journal (portals and install runs: installs/admin.py)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import JournalEntry


@admin.register(JournalEntry)
class JournalEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "portal", "kind", "level", "message", "actor")
    list_filter = ("kind", "level", "created_at")
    search_fields = ("portal__domain", "portal__member_id", "message")
    list_select_related = ("portal",)
    raw_id_fields = ("portal", "staff_user")
    readonly_fields = ("portal", "kind", "level", "message", "details", "actor", "staff_user", "created_at")
    date_hierarchy = "created_at"
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
