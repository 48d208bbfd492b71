from __future__ import annotations

from django.apps import AppConfig


class PlacementsConfig(AppConfig):
    name = "placements"
    verbose_name = "Widgets and bindings"

    def ready(self) -> None:
        from b24portal.celery import add_periodic
        from tenants.signals import portal_purged

        from . import config, install_steps  # noqa: F401  (registers the install steps)
        from .receivers import forget_bindings_on_purge

        portal_purged.connect(forget_bindings_on_purge, dispatch_uid="placements-forget-bindings")
        add_periodic("placements-reconcile-bindings", "placements.tasks.reconcile_all_bindings",
                     config.reconcile_seconds())
