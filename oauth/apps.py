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
                                lambda: timedelta(seconds=settings.B24_CAPABILITIES_CHECK_SECONDS))
        add_periodic("oauth-refresh-capabilities", "oauth.tasks.refresh_all_capabilities",
                     settings.B24_DUE_CHECKS_TICK_SECONDS)
        add_periodic("oauth-rollup-call-log", "oauth.tasks.rollup_call_log", 3600)
        add_periodic("oauth-prune-call-log", "oauth.tasks.prune_call_log", 24 * 3600)
