"""Start-up checks of the configuration (run by every manage.py command, runserver and the workers)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, Warning, register

from b24portal.inputs import HARD_MAX_DEPTH


@register()
def check_configuration(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems: list[Any] = []
    production = not settings.DEBUG

    public = urlsplit(settings.PUBLIC_URL)
    if public.scheme not in ("http", "https") or not public.netloc:
        problems.append(Error("PUBLIC_URL must be an absolute http(s) URL, e.g. https://sms.example.com",
                              id="b24portal.E002"))
    elif public.scheme != "https" and production:
        problems.append(Warning("PUBLIC_URL is not https: Bitrix24 frames and handlers need https in production.",
                                id="b24portal.W002"))

    if settings.B24_WEBHOOK_ALLOW_HTTP and production:
        problems.append(Warning("B24_WEBHOOK_ALLOW_HTTP is on: incoming-webhook URLs (and their secrets) may be "
                                "added over plain http. Use it for development only.", id="b24portal.W011"))

    for name in ("B24_OAUTH_URL", "B24_SERVER_ENDPOINT"):
        url = urlsplit(getattr(settings, name))
        if url.scheme not in ("http", "https") or not url.netloc:
            problems.append(Error(f"{name} must be an absolute http(s) URL", id="b24portal.E003"))

    if not settings.B24_CLIENT_ID or not settings.B24_CLIENT_SECRET:
        problems.append(Warning("B24_CLIENT_ID / B24_CLIENT_SECRET are not set: token refresh will fail.",
                                hint="Copy them from the app card in your Bitrix24 developer account.",
                                id="b24portal.W004"))

    if settings.SANDBOX_ENABLED and production:
        problems.append(Error("SANDBOX_ENABLED is on while DEBUG is off: the sandbox Bitrix24 is for development "
                              "only (it issues tokens and admits its own host as a portal).",
                              hint="Unset SANDBOX_ENABLED in production.", id="b24portal.E013"))

    if not settings.B24_PORTAL_DOMAINS:
        problems.append(Error("B24_PORTAL_DOMAINS is empty: no portal could install the app.", id="b24portal.E005"))
    for pattern in settings.B24_PORTAL_DOMAINS:
        host = pattern.split(":", 1)[0]
        if "/" in pattern or not host or host in ("*", "*.*") or host.count("*") > 1:
            problems.append(Error(f"B24_PORTAL_DOMAINS entry {pattern!r} is not a host or a '*.suffix' pattern",
                                  id="b24portal.E006"))

    if settings.SMS_TTL_SENT_BECOMES not in ("sent", "delivered", "undelivered", "failed"):
        problems.append(Error("SMS_TTL_SENT_BECOMES must be one of sent, delivered, undelivered, failed",
                              id="b24portal.E009"))
    for name in ("SMS_SEND_DEADLINE_MINUTES", "SMS_STATUS_TTL_HOURS", "SMS_CLAIM_TIMEOUT_SECONDS"):
        if getattr(settings, name) <= 0:
            problems.append(Error(f"{name} must be a positive number", id="b24portal.E010"))

    if not 1 <= settings.INPUT_JSON_MAX_DEPTH <= HARD_MAX_DEPTH or settings.INPUT_JSON_MAX_BYTES <= 0:
        problems.append(Error(f"INPUT_JSON_MAX_DEPTH must be between 1 and {HARD_MAX_DEPTH} and "
                              "INPUT_JSON_MAX_BYTES positive", id="b24portal.E011"))

    keys = settings.FIELD_ENCRYPTION_KEY
    for index, key in enumerate(keys):
        try:
            Fernet(key.encode())
        except Exception:
            problems.append(Error(f"FIELD_ENCRYPTION_KEY entry #{index + 1} is not a valid Fernet key",
                                  hint="Generate one: python -c 'from cryptography.fernet import Fernet; "
                                       "print(Fernet.generate_key().decode())'",
                                  id="b24portal.E007"))
    if production:
        dev_key = settings.DEV_FIELD_KEY_FILE
        if dev_key.exists() and keys and keys[0] == dev_key.read_text().strip():
            problems.append(Error("FIELD_ENCRYPTION_KEY is not set: a generated development key is in use.",
                                  id="b24portal.E008"))
        dev_secret = settings.DEV_SECRET_FILE
        if dev_secret.exists() and settings.SECRET_KEY == dev_secret.read_text().strip():
            problems.append(Error("SECRET_KEY is not set: a generated development key is in use.",
                                  id="b24portal.E001"))
    return problems
