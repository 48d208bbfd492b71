"""API keys of the records API: created by staff or by the portal's administrators in the cabinet (the key
is shown once), stored as a SHA-256 hash, revocable; a request's key is found by its hash."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from tenants.journal import Actor, journal
from tenants.models import JournalEntry, Portal

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


def api_keys_for(portal: Portal) -> QuerySet[ApiKey]:
    """The portal's keys, active first, newest first."""
    return ApiKey.objects.filter(portal=portal).order_by("revoked_at", "-created_at", "-id")


def _journal_kind(actor: Actor) -> str:
    # A portal administrator's own key change is part of the portal's lifecycle; staff's is a staff action.
    return JournalEntry.Kind.STAFF if actor.is_staff else JournalEntry.Kind.LIFECYCLE


def do_create_api_key(portal: Portal, *, name: str, callback_url: str = "",
                      actor: Actor = Actor.SYSTEM) -> tuple[ApiKey, str]:
    """A new key for `portal`; returns the row and the key itself (shown once, never stored). The key
    gets a callback secret for signing its callbacks. A blank or over-long name is a ValidationError."""
    name = name.strip()
    if not name or len(name) > ApiKey._meta.get_field("name").max_length:  # type: ignore[operator]
        raise ValidationError({"name": ["a name of 1 to 100 characters is required"]})
    api_key = ApiKey(portal=portal, name=name, callback_url=callback_url)
    key = assign_new_key(api_key)
    with transaction.atomic():
        api_key.save()
        journal(portal, _journal_kind(actor), f"records API key {name} ({api_key.prefix}…) created",
                actor=actor, details={"api_key": api_key.pk})
    return api_key, key


def do_revoke_api_keys(keys: list[ApiKey]) -> int:
    return ApiKey.objects.filter(pk__in=[k.pk for k in keys], revoked_at__isnull=True).update(
        revoked_at=timezone.now())


def do_revoke_api_key(portal: Portal, api_key: ApiKey, *, actor: Actor) -> bool:
    """Revoke one of `portal`'s keys (it stops working at once); False when it was already revoked."""
    with transaction.atomic():
        now = timezone.now()
        revoked = ApiKey.objects.filter(pk=api_key.pk, portal=portal, revoked_at__isnull=True).update(revoked_at=now)
        if not revoked:
            return False
        api_key.revoked_at = now
        journal(portal, _journal_kind(actor), f"records API key {api_key.name} ({api_key.prefix}…) revoked",
                actor=actor, details={"api_key": api_key.pk})
    return True


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
