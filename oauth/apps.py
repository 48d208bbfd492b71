from django.apps import AppConfig


class OAuthConfig(AppConfig):
    name = "oauth"
    label = "oauth"
    verbose_name = "Tokens and REST"

    def ready(self) -> None:
        from datetime import timedelta

        from django.conf import settings

        from b24portal.celery import add_periodic
        from tenants import schedule

        schedule.register_check("capabilities",
                                lambda: timedelta(seconds=settings.B24_CAPABILITIES_CHECK_SECONDS), for_webhooks=True)
        add_periodic("oauth-refresh-capabilities", "oauth.tasks.refresh_all_capabilities",
                     settings.B24_DUE_CHECKS_TICK_SECONDS, staff_may_pause=True,
                     description="Checks which scopes, methods and features each portal grants us, for the portals "
                                 "whose check is due (B24_CAPABILITIES_CHECK_SECONDS).")
        from . import keepalive

        schedule.register_check(keepalive.TOKEN_KEEPALIVE, lambda: keepalive.KEEPALIVE_INTERVAL)
        add_periodic("oauth-keep-tokens-alive", "oauth.tasks.keep_tokens_alive", settings.B24_DUE_CHECKS_TICK_SECONDS,
                     staff_may_pause=True,
                     description="Refreshes the service token of portals that would otherwise leave it unused for "
                                 "longer than B24_TOKEN_KEEPALIVE_DAYS (each portal checked once a day, spread over "
                                 "the day).")
        add_periodic("oauth-expire-parked-calls", "oauth.tasks.expire_parked_calls", 3600,
                     description="Fails the calls that waited for an administrator to confirm a REST method longer "
                                 "than B24_METHOD_CONFIRM_TIMEOUT_HOURS.")
        add_periodic("oauth-redispatch-confirmed-calls", "oauth.tasks.redispatch_confirmed_calls", 60,
                     description="Dispatches again the confirmed calls whose resume was lost (broker down).")
        add_periodic("oauth-rollup-call-log", "oauth.tasks.rollup_call_log", 3600,
                     description="Rolls the REST call log up into calls per portal, day, method and error "
                                 "(the dashboard's REST chart and bursts read these).")
        add_periodic("oauth-prune-call-log", "oauth.tasks.prune_call_log", 24 * 3600, staff_may_pause=True,
                     description="Deletes raw REST call rows older than the retention period (the daily roll-ups "
                                 "stay).")

        from celery.signals import task_postrun, task_prerun, worker_process_shutdown

        from . import calllog

        # Periodic checks: successful calls counted, not logged row by row (calllog.routine).
        calllog.count_routine_calls_of("oauth.tasks.check_capabilities", "oauth.tasks.check_capabilities_chunk")
        task_prerun.connect(calllog.enter_routine_task, dispatch_uid="oauth-calllog-prerun", weak=False)
        task_postrun.connect(calllog.leave_routine_task, dispatch_uid="oauth-calllog-postrun", weak=False)
        worker_process_shutdown.connect(calllog.flush_on_shutdown, dispatch_uid="oauth-calllog-flush", weak=False)
