"""Child process for the killed-worker test: runs the send task the way a Celery worker would."""

from __future__ import annotations

import os
import sys


def run_send(message_pk: int, env: dict[str, str]) -> None:
    os.environ.update(env)
    if env["PROJECT_ROOT"] not in sys.path:
        sys.path.insert(0, env["PROJECT_ROOT"])
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    settings.DATABASES["default"]["NAME"] = env["KILL_DATABASE_NAME"]
    connections["default"].settings_dict["NAME"] = env["KILL_DATABASE_NAME"]
    from messageservice.tasks import send_message

    send_message.apply(args=[message_pk])  # killed while the carrier holds the request
