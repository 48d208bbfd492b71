from __future__ import annotations

from datetime import timedelta

from django.apps import AppConfig
from django.conf import settings


class PlacementsConfig(AppConfig):
    name = "placements"
    verbose_name = "Widgets and bindings"

    def ready(self) -> None:
        from b24portal.celery import add_periodic
        from oauth import calllog, capabilities
        from tenants import schedule
        from tenants.signals import portal_purged

        from . import config, install_steps  # noqa: F401  (registers the install steps)
        from .bindings import BINDINGS_CHECK
        from .receivers import forget_bindings_on_purge

        # Checked at install and daily: an install whose portal lacks them fails with their names.
        capabilities.require_methods("placement.bind", "placement.unbind", "placement.get", "userfieldtype.add",
                                     "userfieldtype.list", "userfieldtype.update", "userfieldtype.delete",
                                     scope="placement", app="placements")
        capabilities.require_methods("crm.contact.get", "crm.lead.get", "crm.deal.get", "crm.company.get",
                                     "crm.timeline.comment.add", "crm.contact.userfield.add",
                                     "crm.lead.userfield.add", scope="crm", app="placements")
        capabilities.require_methods("user.admin", app="placements")
        calllog.count_routine_calls_of("placements.tasks.reconcile_portal_bindings",
                                       "placements.tasks.reconcile_bindings_chunk")  # periodic check: successful calls counted, no rows
        portal_purged.connect(forget_bindings_on_purge, dispatch_uid="placements-forget-bindings")
        schedule.register_check(BINDINGS_CHECK, lambda: timedelta(seconds=config.reconcile_seconds()))
        add_periodic("placements-reconcile-bindings", "placements.tasks.reconcile_all_bindings",
                     settings.B24_DUE_CHECKS_TICK_SECONDS, staff_may_pause=True,
                     description="Checks each due portal's widgets and CRM fields in Bitrix24 and re-creates the "
                                 "missing ones.")
        add_periodic("placements-redispatch-timeline-comments", "placements.tasks.redispatch_timeline_comments", 60,
                     description="Sends again the CRM timeline comments of widget sends whose task was lost.")
