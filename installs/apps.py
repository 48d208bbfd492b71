from django.apps import AppConfig


class InstallsConfig(AppConfig):
    name = "installs"
    verbose_name = "Portals and installs"

    def ready(self) -> None:
        from b24portal.celery import add_periodic
        from oauth import capabilities

        from . import receivers, steps  # noqa: F401  (connects the oauth signals; registers the flow's steps)

        # What the install flow itself calls (install verification, app events).
        capabilities.require_methods("app.info", "user.current", "event.bind", "event.get", app="installs")
        add_periodic("tenants-cleanup-stale-installs", "tenants.tasks.cleanup_stale_installs", 15 * 60,
                     staff_may_pause=True,
                     description="Marks installs that were started but never finished as uninstalled.")
        add_periodic("installs-redispatch-stuck-runs", "installs.tasks.redispatch_stuck_install_runs", 60,
                     description="Dispatches again the install runs whose task was lost (broker down).")
