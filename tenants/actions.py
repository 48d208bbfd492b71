"""Status changes of a Portal that need no REST call, as `do_*` actions.

Each action runs in `transaction.atomic()` and writes a journal entry. The install flow (installs/) and
the REST layer's signals (oauth.signals, handled in installs.receivers) call these; nothing else changes
`Portal.status`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from .journal import Actor, journal
from .models import JournalEntry, Portal

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

Status = Portal.Status

# Licences whose REST limit is 5 req/s with burst 250 (app.info LICENSE_FAMILY).
ENTERPRISE_FAMILIES = {"ent", "enterprise"}


def set_status(portal: Portal, status: str, *, message: str, actor: Actor | str, level: str = "info",
               staff_user: User | None = None, details: Mapping[str, Any] | None = None,
               **fields: Any) -> None:
    """Change the status of a portal row the caller has locked, and journal it (inside the caller's atomic)."""
    previous = portal.status
    portal.status = status
    portal.status_changed_at = timezone.now()
    for name, value in fields.items():
        setattr(portal, name, value)
    portal.save(update_fields=["status", "status_changed_at", "updated_at", *fields])
    journal(portal, JournalEntry.Kind.LIFECYCLE, message, level=level, actor=actor, staff_user=staff_user,
            details={"from": previous, "to": status, **(details or {})})


# -- app.info -------------------------------------------------------------------------------------------
def app_info_fields(app_info: Mapping[str, Any]) -> dict[str, Any]:
    """Portal fields from an app.info result (the trusted source of status and licence)."""

    def as_int(value: Any) -> int | None:
        try:
            return int(value)
        except (TypeError, ValueError):
            return None

    license_code = str(app_info.get("LICENSE") or "")
    family = str(app_info.get("LICENSE_FAMILY") or "")
    status = str(app_info.get("STATUS") or "")
    fields: dict[str, Any] = {
        "app_local_id": as_int(app_info.get("ID")),
        "app_code": str(app_info.get("CODE") or "")[:100],
        "app_status": status if status in Portal.AppStatus.values else "",
        "app_installed": bool(app_info.get("INSTALLED")) if "INSTALLED" in app_info else None,
        "license": license_code[:64],
        "license_type": str(app_info.get("LICENSE_TYPE") or "")[:64],
        "license_family": family[:32],
        "payment_expired": str(app_info.get("PAYMENT_EXPIRED") or "N").upper() == "Y",
        "payment_days": as_int(app_info.get("DAYS")),
        "rate_plan": Portal.RatePlan.ENTERPRISE if family.lower() in ENTERPRISE_FAMILIES
        else Portal.RatePlan.STANDARD,
        "app_info_checked_at": timezone.now(),
    }
    if as_int(app_info.get("VERSION")) is not None:
        fields["installed_version"] = as_int(app_info.get("VERSION"))
    if app_info.get("LANGUAGE_ID"):
        fields["language"] = str(app_info["LANGUAGE_ID"])[:10]
    # The licence code starts with the portal's region ("de_pro100"): a sensible default phone region.
    region = license_code.split("_", 1)[0].upper() if "_" in license_code else ""
    if len(region) == 2 and region.isalpha():
        fields["phone_region"] = {"EN": "US", "UA": "UA", "BY": "BY", "KZ": "KZ"}.get(region, region)
    return fields


def payment_blocks(fields: Mapping[str, Any]) -> bool:
    """After the grace period app.info says PAYMENT_EXPIRED=Y with negative DAYS: the app is blocked."""
    days = fields.get("payment_days")
    return bool(fields.get("payment_expired")) and days is not None and days < 0


def do_record_app_info(portal: Portal, app_info: Mapping[str, Any], *, actor: Actor | str = Actor.SYSTEM,
                       staff_user: User | None = None) -> Portal:
    """Store a fresh app.info answer, and block or unblock for payment when it says so."""
    fields = app_info_fields(app_info)
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        for name, value in fields.items():
            if name == "phone_region" and portal.phone_region:
                continue  # staff may have set it
            setattr(portal, name, value)
        portal.save()
        journal(portal, JournalEntry.Kind.STAFF if staff_user else JournalEntry.Kind.LIFECYCLE,
                f"app.info: status {fields['app_status'] or '?'}, licence {fields['license'] or '?'}, "
                f"installed {fields['app_installed']}", actor=actor, staff_user=staff_user,
                details={"app_info": dict(app_info)})
        apply_payment_state(portal, actor=actor)
    return portal


def apply_payment_state(portal: Portal, *, actor: Actor | str) -> None:
    blocked_for_payment = portal.status == Status.BLOCKED and portal.blocked_reason.startswith("payment")
    if payment_blocks({"payment_expired": portal.payment_expired, "payment_days": portal.payment_days}):
        if portal.status == Status.ACTIVE:
            set_status(portal, Status.BLOCKED, message="blocked: payment required", actor=actor,
                        level="warning", blocked_reason="payment required")
    elif blocked_for_payment:
        set_status(portal, Status.ACTIVE, message="unblocked: payment received", actor=actor, blocked_reason="")


# -- status changes -------------------------------------------------------------------------------------
def do_block_portal(portal: Portal, *, reason: str, actor: Actor | str = Actor.SYSTEM,
                    staff_user: User | None = None) -> bool:
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if portal.status in (Status.BLOCKED, Status.DELETED):
            return False
        set_status(portal, Status.BLOCKED, message=f"blocked: {reason}", level="warning",
                    actor=Actor.staff(staff_user) if staff_user else actor, staff_user=staff_user, blocked_reason=reason[:255])
    return True


def do_unblock_portal(portal: Portal, *, actor: Actor | str = Actor.SYSTEM, staff_user: User | None = None) -> bool:
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if portal.status != Status.BLOCKED:
            return False
        set_status(portal, Status.ACTIVE, message="unblocked", actor=Actor.staff(staff_user) if staff_user else actor,
                    staff_user=staff_user, blocked_reason="")
    return True


def do_mark_needs_reinstall(portal: Portal, *, reason: str, actor: Actor | str = Actor.SYSTEM) -> bool:
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if portal.status in (Status.NEEDS_REINSTALL, Status.DELETED):
            return False
        set_status(portal, Status.NEEDS_REINSTALL, message=f"needs reinstall: {reason}", level="error", actor=actor)
    return True


def do_change_domain(portal: Portal, *, domain: str, rest_endpoint: str, source: str) -> None:
    with transaction.atomic():
        previous = Portal.objects.select_for_update().values_list("domain", flat=True).get(pk=portal.pk)
        Portal.objects.filter(pk=portal.pk).update(domain=domain, rest_endpoint=rest_endpoint)
        portal.domain, portal.rest_endpoint = domain, rest_endpoint
        if previous != domain:
            journal(portal, JournalEntry.Kind.LIFECYCLE, f"portal renamed: {previous} → {domain} ({source})",
                    level="warning", actor=Actor.BITRIX24, details={"from": previous, "to": domain})
