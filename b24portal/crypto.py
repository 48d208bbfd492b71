"""Encryption at rest for tokens and carrier credentials (Fernet, with key rotation).

FIELD_ENCRYPTION_KEY holds one or more Fernet keys: new writes use the first, reads try all
(`MultiFernet`). `manage.py reencrypt_secrets` rewrites every encrypted value with the first key.
A stored value looks like `fernet:<token>`, so a database dump never holds a secret in clear text.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import models

PREFIX = "fernet:"


class DecryptionError(Exception):
    """A stored value cannot be read with any configured key."""


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    if not keys:
        raise ImproperlyConfigured("FIELD_ENCRYPTION_KEY is empty")
    return MultiFernet([Fernet(key.encode()) for key in keys])


def get_fernet() -> MultiFernet:
    return _fernet_for(tuple(settings.FIELD_ENCRYPTION_KEY))


def encrypt_str(value: str) -> str:
    return PREFIX + get_fernet().encrypt(value.encode()).decode()


def decrypt_str(value: str) -> str:
    if not value.startswith(PREFIX):
        raise DecryptionError("value is not encrypted")
    try:
        return get_fernet().decrypt(value[len(PREFIX) :].encode()).decode()
    except InvalidToken as exc:
        raise DecryptionError("no configured key decrypts this value") from exc


def rotate_str(value: str) -> str:
    """Re-encrypt with the first key (MultiFernet.rotate keeps the original timestamp)."""
    return PREFIX + get_fernet().rotate(value[len(PREFIX) :].encode()).decode()


def mask(value: str | None, visible: int = 4) -> str:
    """What admin shows of a secret: its length class and last characters, never the whole."""
    if not value:
        return "—"
    if len(value) <= visible * 2:
        return "•" * 8
    return "•" * 8 + value[-visible:]


class EncryptedTextField(models.TextField):
    """A text column stored encrypted. Python side: str (or None); database side: `fernet:...`."""

    description = "Text encrypted at rest with FIELD_ENCRYPTION_KEY"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str | None:
        if value is None or value == "":
            return value
        return decrypt_str(value)

    def get_prep_value(self, value: Any) -> str | None:
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt_str(value)


class EncryptedJSONField(models.TextField):
    """A JSON object stored encrypted (carrier credentials)."""

    description = "JSON encrypted at rest with FIELD_ENCRYPTION_KEY"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return {}
        return json.loads(decrypt_str(value))

    def to_python(self, value: Any) -> Any:
        if isinstance(value, dict):
            return value
        if not value:
            return {}
        return json.loads(value)

    def get_prep_value(self, value: Any) -> str | None:
        if value is None:
            return None
        return encrypt_str(json.dumps(value, sort_keys=True))

    def value_to_string(self, obj: models.Model) -> str:
        return "<encrypted>"


ENCRYPTED_FIELD_TYPES = (EncryptedTextField, EncryptedJSONField)
