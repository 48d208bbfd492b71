from __future__ import annotations

from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Records sync (external system → CRM leads)"

    def ready(self) -> None:
        from django.core import checks

        from b24portal.celery import add_periodic
        from oauth import capabilities
        from tenants.signals import portal_purged

        from . import replies  # noqa: F401  (registers the http deliverer)
        from .checks import check_records_settings
        from .receivers import forget_records_on_purge

        capabilities.require_methods("crm.lead.add", "crm.lead.update", "crm.lead.list", "crm.status.list",
                                     scope="crm", app="records")
        checks.register(check_records_settings)
        portal_purged.connect(forget_records_on_purge, dispatch_uid="records-forget-on-purge")
        add_periodic("records-redispatch-jobs", "records.tasks.redispatch_lost_jobs", 60,
                     description="Puts back records jobs a worker died on and applies owed jobs whose task was "
                                 "lost.")
        add_periodic("records-redispatch-replies", "records.replies.redispatch_replies", 60,
                     description="Delivers again the records replies (callbacks, reply queues) whose task was "
                                 "lost or whose worker died.")
