"""The b24portal Django project: settings, URLs, the Celery app, health views, logging."""

from .celery import app as celery_app

__all__ = ["celery_app"]
__version__ = "0.1.0"
