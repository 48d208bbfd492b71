"""SMS through Bitrix24 messageservice: carriers, provider accounts, the handler, send/poll/push."""

from __future__ import annotations

from datetime import timedelta

from django.apps import AppConfig
from django.conf import settings


class MessageserviceConfig(AppConfig):
    name = "messageservice"
    verbose_name = "SMS"

    def ready(self) -> None:
        from b24portal.celery import add_periodic, app
        from oauth import calllog, capabilities
        from tenants import schedule
        from tenants.signals import portal_purged

        from . import senders  # also registers the "sms_senders" install step
        from .outbox import register_dispatcher_step
        from .receivers import purge_portal_sms

        capabilities.require_methods("messageservice.sender.add", "messageservice.sender.update",
                                     "messageservice.sender.delete", "messageservice.sender.list",
                                     "messageservice.message.status.update", scope="messageservice",
                                     app="messageservice")

        schedule.register_check(senders.SENDERS_CHECK, lambda: timedelta(seconds=settings.SMS_SENDER_RECONCILE_SECONDS))
        add_periodic("messageservice-reconcile-senders", "messageservice.tasks.reconcile_all_senders",
                     settings.B24_DUE_CHECKS_TICK_SECONDS, staff_may_pause=True,
                     description="Checks each due portal's SMS senders in Bitrix24 and registers the missing or "
                                 "changed ones.")
        add_periodic("messageservice-sweep-stale-claims", "messageservice.tasks.sweep_stale_claims", 60,
                     description="Puts right messages whose send was claimed by a worker that died.")
        add_periodic("messageservice-redispatch-lost", "messageservice.tasks.redispatch_lost_messages", 60,
                     description="Dispatches again the SMS sends whose task was lost (broker down) or whose retry "
                                 "is due.")
        # Delivery status: poll carriers for due messages, push changed statuses to Bitrix24.
        add_periodic("messageservice-poll-statuses", "messageservice.delivery.dispatch_status_polls", 15,
                     description="Asks the carriers for the delivery status of messages whose poll is due.")
        add_periodic("messageservice-push-statuses", "messageservice.delivery.dispatch_status_pushes", 5,
                     description="Tells Bitrix24 the delivery statuses it has not been told yet.")
        calllog.count_routine_calls_of("messageservice.tasks.reconcile_portal_senders",
                                       "messageservice.tasks.reconcile_senders_chunk")  # periodic check: successful calls counted, no rows
        # The handler's outbox is drained inside the SMS worker: no process of its own to deploy.
        register_dispatcher_step(app)
        portal_purged.connect(purge_portal_sms, dispatch_uid="messageservice-purge")

