"""Settings of the SMS app, each with a default so the app works before settings.py lists them.

Read through these functions (not at import time) so `override_settings` in tests takes effect.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # A message whose carrier stays unreachable (transient errors) is retried until this long after it
    # was accepted; then it fails with the last error.
    "SMS_SEND_DEADLINE_MINUTES": 60,
    # Exponential backoff between send attempts: base * 2**(attempt-1), capped, plus up to 25% jitter.
    "SMS_RETRY_BASE_SECONDS": 10,
    "SMS_RETRY_MAX_SECONDS": 600,
    # A message left in `sending` longer than this (the worker died mid-send) goes to needs_review.
    "SMS_CLAIM_TIMEOUT_SECONDS": 300,
    # An accepted/retrying message whose dispatch was lost (broker down at commit) is dispatched again
    # once it is this late.
    "SMS_REDISPATCH_AFTER_SECONDS": 120,
    # First carrier status poll this long after the carrier accepted the message (the poller's field).
    "SMS_FIRST_POLL_SECONDS": 15,
    # How often the periodic sender reconcile runs for every active portal.
    "SMS_SENDER_RECONCILE_SECONDS": 600,
    # Admin message list: above this many matching rows a filtered list shows "N+" instead of counting.
    "SMS_ADMIN_COUNT_CAP": 10_000,
}


def get(name: str) -> Any:
    return getattr(settings, name, DEFAULTS[name])
