from django.apps import AppConfig


class B24PortalConfig(AppConfig):
    name = "b24portal"
    verbose_name = "b24portal"

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the start-up checks)
