"""Child-process side of the refresh-race test and benchmark (started with the 'spawn' method)."""

from __future__ import annotations

import os
import sys
from typing import Any


def call_app_info(portal_id: int, barrier: Any, results: Any, env: dict[str, str]) -> None:
    os.environ.update(env)
    root = env["PROJECT_ROOT"]
    if root not in sys.path:
        sys.path.insert(0, root)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
    import django

    django.setup()
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = env["RACE_DATABASE_NAME"]
    settings.B24_OAUTH_URL = env["RACE_OAUTH_URL"]
    settings.B24_SERVER_ENDPOINT = env["RACE_SERVER_ENDPOINT"]

    from oauth.client import PortalClient
    from tenants.models import Portal

    portal = Portal.objects.get(pk=portal_id)
    client = PortalClient(portal)
    client._token = None
    barrier.wait(timeout=60)
    try:
        result = client.call("app.info")
        results.put(("ok", result.get("ID")))
    except Exception as exc:  # the parent counts failures by kind
        results.put(("error", f"{type(exc).__name__}: {exc}"))
