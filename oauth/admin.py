"""Tokens in admin: only masked values and expiry, never a secret."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from b24portal.crypto import mask

from .models import PortalToken


@admin.register(PortalToken)
class PortalTokenAdmin(admin.ModelAdmin):
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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
