from django.apps import AppConfig


class OAuthConfig(AppConfig):
    name = "oauth"
    label = "oauth"
    verbose_name = "Tokens and REST"

    def ready(self) -> None:
        from b24portal.celery import add_periodic

        add_periodic("oauth-refresh-capabilities", "oauth.tasks.refresh_all_capabilities", 24 * 3600)
        add_periodic("oauth-rollup-call-log", "oauth.tasks.rollup_call_log", 3600)
        add_periodic("oauth-prune-call-log", "oauth.tasks.prune_call_log", 24 * 3600)
