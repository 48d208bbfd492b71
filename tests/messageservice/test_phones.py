"""normalize_phone / mask_phone."""

from __future__ import annotations

import pytest

from messageservice.phones import InvalidPhoneNumber, mask_phone, normalize_phone


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+7 (999) 123-45-67", None, "+79991234567"),
        ("+7 (999) 123-45-67", "RU", "+79991234567"),
        ("8 999 123 45 67", "RU", "+79991234567"),
        ("89991234567", "ru", "+79991234567"),
        ("79991234567", "RU", "+79991234567"),
        ("79991234567", None, "+79991234567"),  # Bitrix24 often drops the "+"
        ("8 (495) 123-45-67", "RU", "+74951234567"),
        ("810 1 202 555 0143", "RU", "+12025550143"),
        ("+1 202-555-0143", "RU", "+12025550143"),
        ("  +380 50 123 4567 ", None, "+380501234567"),
    ],
)
def test_it_normalizes_to_e164(raw: str, region: str | None, expected: str) -> None:
    assert normalize_phone(raw, region) == expected


@pytest.mark.parametrize(
    ("raw", "region", "reason"),
    [
        ("123", "RU", "not a valid number for region RU"),
        ("+7 000 123 45 67", None, "not a valid number for region RU"),
        ("call me", "RU", "cannot parse: not a phone number"),
        ("8 999 123 45 67", None, "cannot parse: no country code and no default region"),
        ("", "RU", "empty phone number"),
        ("+79991234567", "XX", "unknown region XX"),
    ],
)
def test_it_explains_why_a_number_is_rejected(raw: str, region: str | None, reason: str) -> None:
    with pytest.raises(InvalidPhoneNumber) as exc:
        normalize_phone(raw, region)

    assert exc.value.reason == reason
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize(
    ("e164", "masked"),
    [
        ("+79991234567", "+7999***4567"),
        ("+12025550143", "+1202***0143"),
        ("+380501234567", "+38050***4567"),
        ("1234567", "+12***67"),
        ("", "***"),
    ],
)
def test_it_masks_for_display(e164: str, masked: str) -> None:
    assert mask_phone(e164) == masked
