"""The admin site whose home page is the dashboard (console.dashboard): what needs attention, then the
usual list of models."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from .dashboard import dashboard_context


class ConsoleAdminSite(admin.AdminSite):
    index_template = "console/dashboard.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        return super().index(request, extra_context={**dashboard_context(), **(extra_context or {})})
