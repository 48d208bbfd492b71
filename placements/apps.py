from __future__ import annotations

from django.apps import AppConfig


class PlacementsConfig(AppConfig):
    name = "placements"
    verbose_name = "Widgets and bindings"

    def ready(self) -> None:
        from b24portal.celery import add_periodic
        from oauth import capabilities
        from tenants.signals import portal_purged

        from . import config, install_steps  # noqa: F401  (registers the install steps)
        from .receivers import forget_bindings_on_purge

        # Checked at install and daily: an install whose portal lacks them fails with their names.
        capabilities.require_methods("placement.bind", "placement.unbind", "placement.get", "userfieldtype.add",
                                     "userfieldtype.list", "userfieldtype.update", "userfieldtype.delete",
                                     scope="placement", app="placements")
        capabilities.require_methods("crm.contact.get", "crm.lead.get", "crm.deal.get", "crm.company.get",
                                     "crm.timeline.comment.add", "crm.contact.userfield.add",
                                     "crm.lead.userfield.add", scope="crm", app="placements")
        capabilities.require_methods("user.admin", app="placements")
        portal_purged.connect(forget_bindings_on_purge, dispatch_uid="placements-forget-bindings")
        add_periodic("placements-reconcile-bindings", "placements.tasks.reconcile_all_bindings",
                     config.reconcile_seconds())
        add_periodic("placements-redispatch-timeline-comments", "placements.tasks.redispatch_timeline_comments", 60)
