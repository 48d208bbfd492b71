"""Start-up checks of the records settings (`manage.py check`)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import phonenumbers
from django.conf import settings
from django.core.checks import Error
from rest_framework.throttling import SimpleRateThrottle


def check_records_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    region = str(settings.RECORDS_PHONE_REGION or "").upper()
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        problems.append(Error(f"RECORDS_PHONE_REGION {region!r} is not a region code (e.g. KZ, RU)",
                              id="records.E001"))
    try:
        SimpleRateThrottle.parse_rate(None, str(settings.RECORDS_THROTTLE))  # type: ignore[arg-type]
    except (ValueError, KeyError, IndexError):
        problems.append(Error("RECORDS_THROTTLE must be a rate like 1200/min", id="records.E002"))
    for origin in settings.RECORDS_CORS_ALLOWED_ORIGINS:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
            problems.append(Error(f"RECORDS_CORS_ALLOWED_ORIGINS entry {origin!r} is not an origin "
                                  "(scheme://host[:port])", id="records.E003"))
    for name in ("RECORDS_JOB_DEADLINE_MINUTES", "RECORDS_CLAIM_TIMEOUT_SECONDS", "RECORDS_REDISPATCH_AFTER_SECONDS",
                 "RECORDS_BATCHES_PER_RUN", "RECORDS_REPLY_MAX_ATTEMPTS", "RECORDS_CALLBACK_TIMEOUT"):
        if not float(getattr(settings, name)) > 0:
            problems.append(Error(f"{name} must be a positive number", id="records.E004"))
    if not str(settings.RECORDS_ORIGINATOR_ID).strip():
        problems.append(Error("RECORDS_ORIGINATOR_ID must not be empty: it is how our leads are found again",
                              id="records.E005"))
    return problems
