from __future__ import annotations

from django.apps import AppConfig


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Records sync (external system → CRM leads)"

    def ready(self) -> None:
        from b24portal.celery import add_periodic
        from oauth import capabilities

        from . import replies  # noqa: F401  (registers the http deliverer)

        capabilities.require_methods("crm.lead.add", "crm.lead.update", "crm.lead.list", "crm.status.list",
                                     scope="crm", app="records")
        add_periodic("records-redispatch-jobs", "records.tasks.redispatch_lost_jobs", 60,
                     description="Puts back records jobs a worker died on and applies owed jobs whose task was "
                                 "lost.")
        add_periodic("records-redispatch-replies", "records.replies.redispatch_replies", 60,
                     description="Delivers again the records replies (callbacks, reply queues) whose task was "
                                 "lost or whose worker died.")
