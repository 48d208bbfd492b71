"""Health endpoints: /health/ (the process answers) and /health/ready/ (database and broker reachable)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from b24portal import __version__
from b24portal.celery import app as celery_app
from b24portal.redis import get_redis


@require_GET
def alive(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok", "version": __version__})


def _check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
    return {"vendor": connection.vendor}


def _check_broker() -> dict[str, Any]:
    with celery_app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
        return {"transport": conn.transport_cls if isinstance(conn.transport_cls, str) else conn.transport.driver_name}


def _check_redis() -> dict[str, Any]:
    if not settings.REDIS_URL:
        return {"skipped": "REDIS_URL not set (embedded defaults)"}
    get_redis().ping()
    return {}


CHECKS = {"database": _check_database, "broker": _check_broker, "redis": _check_redis}


@require_GET
def ready(request: HttpRequest) -> JsonResponse:
    results: dict[str, Any] = {}
    healthy = True
    for name, check in CHECKS.items():
        started = time.monotonic()
        try:
            detail = check()
            results[name] = {"ok": True, **detail}
        except Exception as exc:  # a health check reports failures, it does not raise them
            healthy = False
            results[name] = {"ok": False, "error": type(exc).__name__, "detail": str(exc)[:200]}
        results[name]["ms"] = round((time.monotonic() - started) * 1000, 1)
    return JsonResponse({"status": "ok" if healthy else "unavailable", "checks": results},
                        status=200 if healthy else 503)
