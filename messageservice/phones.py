"""Phone numbers: normalize what Bitrix24 hands us to E.164, and mask them for display."""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import NumberParseException

_ONLY_NUMBER_CHARS = re.compile(r"^[\d\s().\-]+$")

_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "missing or invalid country code",
    NumberParseException.NOT_A_NUMBER: "not a phone number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short after the international prefix",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}


class InvalidPhoneNumber(ValueError):
    """`reason` is a short human explanation, e.g. "not a valid number for region RU"."""

    def __init__(self, raw: object, reason: str) -> None:
        super().__init__(reason)
        self.raw = raw
        self.reason = reason


def _parse(text: str, region: str | None) -> phonenumbers.PhoneNumber:
    try:
        return phonenumbers.parse(text, region)
    except NumberParseException as exc:
        # Bitrix24 often stores international numbers without "+" ("79991234567"); with no default
        # region to read them against, try them as international before giving up
        if (
            region is None
            and exc.error_type == NumberParseException.INVALID_COUNTRY_CODE
            and _ONLY_NUMBER_CHARS.match(text)
        ):
            try:
                return phonenumbers.parse("+" + text, None)
            except NumberParseException:
                pass
        reason = _PARSE_REASONS.get(exc.error_type, "unrecognized format")
        if exc.error_type == NumberParseException.INVALID_COUNTRY_CODE and region is None:
            reason = "no country code and no default region"
        raise InvalidPhoneNumber(text, f"cannot parse: {reason}") from exc


def normalize_phone(raw: str, default_region: str | None = None) -> str:
    """E.164 form of `raw` ("+79991234567"). `default_region` (ISO 3166 alpha-2, e.g. "RU") is used
    for numbers written without a country code, e.g. "8 999 123 45 67"."""
    text = str(raw or "").strip()
    if not text:
        raise InvalidPhoneNumber(raw, "empty phone number")
    region = default_region.strip().upper() if default_region else None
    if region and region not in phonenumbers.SUPPORTED_REGIONS:
        raise InvalidPhoneNumber(raw, f"unknown region {region}")
    number = _parse(text, region)
    if not phonenumbers.is_valid_number(number):
        if region and not text.startswith("+"):
            where = region
        else:
            where = phonenumbers.region_code_for_country_code(number.country_code or 0)
        if where and where != "ZZ":
            raise InvalidPhoneNumber(raw, f"not a valid number for region {where}")
        raise InvalidPhoneNumber(raw, f"not a valid number (country code +{number.country_code})")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """Mask for display: "+79991234567" -> "+7999***4567" (country code and 3 more digits, the last 4,
    stars between). Never raises; short or odd input is masked more heavily."""
    digits = re.sub(r"\D", "", str(e164 or ""))
    if not digits:
        return "***"
    try:
        cc_len = len(str(phonenumbers.parse("+" + digits, None).country_code))
    except NumberParseException:
        cc_len = 1
    tail = 4 if len(digits) >= 10 else len(digits) // 3
    head = max(0, min(cc_len + 3, len(digits) - tail - 3))
    hidden = len(digits) - head - tail
    return "+" + digits[:head] + "*" * hidden + digits[len(digits) - tail :]
