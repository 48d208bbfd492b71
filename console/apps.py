from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class ConsoleConfig(AppConfig):
    name = "console"
    verbose_name = "Support console"
    default = True


class ConsoleAdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the console's site: its index is the dashboard (console.site)."""

    default = False
    default_site = "console.site.ConsoleAdminSite"
