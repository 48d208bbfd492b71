from __future__ import annotations

from django.apps import AppConfig
from django.conf import settings


class RecordsConfig(AppConfig):
    name = "records"
    verbose_name = "Records sync (external system → CRM leads)"

    def ready(self) -> None:
        from django.core import checks

        from b24portal.celery import add_periodic
        from oauth import capabilities
        from tenants import schedule
        from tenants.signals import portal_purged

        # replies registers the http deliverer; admin_channels the AMQP / offline-feed admin; offline the
        # install step and its tasks; amqp the amqp deliverer (below).
        from . import admin_channels, amqp, offline, replies  # noqa: F401
        from .checks import check_records_settings
        from .receivers import forget_records_on_purge

        # for_webhooks: a portal connected by an incoming webhook syncs records too (nothing here needs the app)
        capabilities.require_methods("crm.lead.add", "crm.lead.update", "crm.lead.list", "crm.status.list",
                                     scope="crm", app="records", for_webhooks=True)
        checks.register(check_records_settings)
        checks.register(amqp.check_amqp_settings)
        portal_purged.connect(forget_records_on_purge, dispatch_uid="records-forget-on-purge")
        add_periodic("records-redispatch-jobs", "records.tasks.redispatch_lost_jobs", 60,
                     description="Puts back records jobs a worker died on and applies owed jobs whose task was "
                                 "lost.")
        add_periodic("records-redispatch-replies", "records.replies.redispatch_replies", 60,
                     description="Delivers again the records replies (callbacks, reply queues) whose task was "
                                 "lost or whose worker died.")
        replies.register_deliverer("amqp", amqp.deliver_reply)
        capabilities.require_methods("crm.lead.get", scope="crm", app="records")
        schedule.register_check(offline.OFFLINE_CHECK, offline.poll_interval)
        add_periodic("records-poll-offline-events", "records.offline.poll_offline_events",
                     settings.B24_DUE_CHECKS_TICK_SECONDS, staff_may_pause=True,
                     description="Reads the offline CRM events of each due portal and sends card_changed replies "
                                 "for leads moved or edited in Bitrix24.")
