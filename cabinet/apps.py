from __future__ import annotations

from django.apps import AppConfig


class CabinetConfig(AppConfig):
    name = "cabinet"
    verbose_name = "Personal cabinet"

    def ready(self) -> None:
        from placements import extensions
        from tenants.signals import portal_purged

        from .addons import cabinet_entry, template_picker
        from .receivers import forget_templates_on_purge
        from .records_card import records_section

        extensions.register_slider_addon("cabinet-templates", template_picker)
        extensions.register_app_page_addon("cabinet", cabinet_entry)
        extensions.register_portal_section("records", records_section)
        portal_purged.connect(forget_templates_on_purge, dispatch_uid="cabinet-forget-templates")
