"""Encryption at rest and key rotation."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from b24portal import crypto
from b24portal.crypto import DecryptionError, decrypt_str, encrypt_str, mask


def test_a_value_round_trips_and_is_not_stored_in_clear():
    stored = encrypt_str("my-access-token")
    assert stored.startswith("fernet:") and "my-access-token" not in stored
    assert decrypt_str(stored) == "my-access-token"


def test_new_writes_use_the_first_key_and_reads_try_all(settings):
    old_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [old_key]
    written_with_old = encrypt_str("secret")

    new_key = Fernet.generate_key().decode()
    settings.FIELD_ENCRYPTION_KEY = [new_key, old_key]
    assert decrypt_str(written_with_old) == "secret"
    rotated = crypto.rotate_str(written_with_old)

    settings.FIELD_ENCRYPTION_KEY = [new_key]
    assert decrypt_str(rotated) == "secret"
    with pytest.raises(DecryptionError):
        decrypt_str(written_with_old)


def test_mask_shows_only_the_tail():
    assert mask("abcdefghijklmnop") == "••••••••mnop"
    assert mask("") == "—"
    assert "short" not in mask("short")
