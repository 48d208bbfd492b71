"""Per-phone SMS consent of a portal. The send task refuses opted-out numbers ("recipient opted out")."""

from __future__ import annotations

from collections.abc import Iterable

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from tenants.journal import Actor, journal
from tenants.models import JournalEntry, Portal

from .models import PhoneConsent
from .phones import InvalidPhoneNumber, mask_phone, normalize_phone

__all__ = ["NotAnItemPhone", "PhoneConsent", "consent_for", "do_set_consent", "do_set_item_consent", "is_opted_out"]


class NotAnItemPhone(Exception):
    """The number is not one of the CRM item's phones: a consent change for it is refused (`reason`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _e164(portal: Portal, phone: str) -> str:
    return normalize_phone(phone, portal.phone_region or None)


def consent_for(portal: Portal, phones: list[str]) -> dict[str, PhoneConsent | None]:
    """The decision for each phone as given (keys are the input strings); None = no decision or a number
    that cannot be read. One query."""
    normalized: dict[str, str | None] = {}
    for phone in phones:
        try:
            normalized[phone] = _e164(portal, phone)
        except InvalidPhoneNumber:
            normalized[phone] = None
    wanted = {n for n in normalized.values() if n}
    found = {c.phone: c for c in PhoneConsent.objects.filter(portal=portal, phone__in=wanted)} if wanted else {}
    return {phone: found.get(e164) if e164 else None for phone, e164 in normalized.items()}


def is_opted_out(portal: Portal, phone: str) -> bool:
    """True only for an explicit opt-out (`phone` in any form normalize_phone reads, E.164 preferred)."""
    try:
        e164 = _e164(portal, phone)
    except InvalidPhoneNumber:
        return False
    return PhoneConsent.objects.filter(portal=portal, phone=e164, opted_in=False).exists()


def do_set_consent(portal: Portal, *, phone: str, opted_in: bool, user_id: int | None,
                   source: str) -> PhoneConsent:
    """Record a decision (replacing the previous one). Raises ValidationError for an unreadable number."""
    try:
        e164 = _e164(portal, phone)
    except InvalidPhoneNumber as exc:
        raise ValidationError({"phone": [exc.reason]}) from None
    with transaction.atomic():
        consent, _created = PhoneConsent.objects.update_or_create(
            portal=portal, phone=e164,
            defaults={"opted_in": opted_in, "changed_at": timezone.now(), "changed_by_user_id": user_id,
                      "source": source[:50]},
        )
        journal(portal, JournalEntry.Kind.MESSAGE,
                f"SMS consent: {mask_phone(e164)} {'opted in' if opted_in else 'opted out'} ({source})",
                actor=Actor.portal_user(user_id) if user_id else source[:100],
                details={"opted_in": opted_in, "source": source})
    return consent


def do_set_item_consent(portal: Portal, *, phone: str, opted_in: bool, user_id: int, item_phones: Iterable[str],
                        source: str) -> PhoneConsent:
    """A user's decision for one phone of one CRM item: `item_phones` are that item's numbers as read with
    the user's own rights just now. Both sides are compared in E.164 (the portal's region for local
    numbers); a number the item does not have raises NotAnItemPhone and nothing is stored. Raises
    ValidationError for an unreadable number."""
    try:
        e164 = _e164(portal, phone)
    except InvalidPhoneNumber as exc:
        raise ValidationError({"phone": [exc.reason]}) from None
    allowed: set[str] = set()
    for candidate in item_phones:
        try:
            allowed.add(_e164(portal, candidate))
        except InvalidPhoneNumber:
            continue  # a number no SMS can go to needs no consent
    if e164 not in allowed:
        raise NotAnItemPhone("this number is not one of the item's phone numbers")
    return do_set_consent(portal, phone=e164, opted_in=opted_in, user_id=user_id, source=source)
