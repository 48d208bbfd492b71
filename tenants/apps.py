from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    verbose_name = "Portals"

    def ready(self) -> None:
        from b24portal.celery import add_periodic

        from . import install_steps  # noqa: F401  (registers this app's own install step)

        add_periodic("tenants-cleanup-stale-installs", "tenants.tasks.cleanup_stale_installs", 15 * 60)
