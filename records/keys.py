"""API keys of the records API: created by staff (the key is shown once), stored as a SHA-256 hash,
revocable; a request's key is found by its hash."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from tenants.models import Portal

from .models import ApiKey, hash_api_key

KEY_PREFIX = "b24p_"
SHOWN_PREFIX_LENGTH = 12
# last_used_at is written at most this often per key: a busy key costs no write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_callback_secret() -> str:
    return secrets.token_urlsafe(32)


def assign_new_key(api_key: ApiKey) -> str:
    """Give an unsaved key row its key (hash and prefix) and a callback secret; returns the key itself."""
    key = new_key()
    api_key.prefix, api_key.key_hash = key[:SHOWN_PREFIX_LENGTH], hash_api_key(key)
    api_key.callback_secret = new_callback_secret()
    return key


def do_rotate_callback_secret(api_key: ApiKey) -> str:
    """A new signing secret for the key's callbacks (returned once to show staff)."""
    secret = new_callback_secret()
    ApiKey.objects.filter(pk=api_key.pk).update(callback_secret=secret)
    api_key.callback_secret = secret
    return secret


def do_create_api_key(portal: Portal, *, name: str, callback_url: str = "") -> tuple[ApiKey, str]:
    """A new key for `portal`; returns the row and the key itself (shown to staff once, never stored).
    The key gets a callback secret for signing its callbacks."""
    api_key = ApiKey(portal=portal, name=name, callback_url=callback_url)
    key = assign_new_key(api_key)
    with transaction.atomic():
        api_key.save()
    return api_key, key


def do_revoke_api_keys(keys: list[ApiKey]) -> int:
    return ApiKey.objects.filter(pk__in=[k.pk for k in keys], revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def active_key(raw: str) -> ApiKey | None:
    """The active key `raw` is, with its portal, or None (unknown or revoked). Notes the use (cheaply)."""
    if not raw.startswith(KEY_PREFIX) or len(raw) > 200:
        return None
    api_key = ApiKey.objects.select_related("portal").filter(key_hash=hash_api_key(raw)).first()
    if api_key is None or api_key.revoked_at is not None:
        return None
    now = timezone.now()
    if api_key.last_used_at is None or api_key.last_used_at < now - LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key
