"""Every change to a Portal's lifecycle, as `do_*` actions.

Each action runs in `transaction.atomic()`, writes a journal entry, and dispatches Celery work only on
commit. Views, tasks and admin call these; nothing else changes `Portal.status`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from b24portal.logging import redact_value

from .install_steps import get_install_steps
from .models import (
    InstallRun,
    InstallStepResult,
    JournalEntry,
    Portal,
    hash_application_token,
    new_handler_key,
)
from .signals import portal_purged

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from oauth.tokens import TokenGrant

logger = logging.getLogger(__name__)

Status = Portal.Status

# Licences whose REST limit is 5 req/s with burst 250 (app.info LICENSE_FAMILY).
ENTERPRISE_FAMILIES = {"ent", "enterprise"}


def _actor_for(staff_user: AbstractBaseUser | None, default: str) -> str:
    return f"staff:{staff_user.get_username()}" if staff_user is not None else default


def journal(portal: Portal, kind: str, message: str, *, level: str = "info",
            details: Mapping[str, Any] | None = None, actor: str = "system",
            staff_user: AbstractBaseUser | None = None) -> JournalEntry:
    """Write a journal entry; warnings and errors also become the portal's "last problem"."""
    entry = JournalEntry.objects.create(
        portal=portal, kind=kind, level=level, message=message[:500],
        details=redact_value(dict(details or {})), actor=actor, staff_user=staff_user,
    )
    if level in (JournalEntry.Level.WARNING, JournalEntry.Level.ERROR):
        Portal.objects.filter(pk=portal.pk).update(last_problem=message[:500], last_problem_at=entry.created_at)
        portal.last_problem, portal.last_problem_at = message[:500], entry.created_at
    log = logger.warning if level != "info" else logger.info
    log(message, extra={"member_id": portal.member_id, "journal_kind": kind, "actor": actor})
    return entry


def _set_status(portal: Portal, status: str, *, message: str, actor: str, level: str = "info",
                staff_user: AbstractBaseUser | None = None, details: Mapping[str, Any] | None = None,
                **fields: Any) -> None:
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


def do_record_app_info(portal: Portal, app_info: Mapping[str, Any], *, actor: str = "system",
                       staff_user: AbstractBaseUser | None = None) -> Portal:
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
        _apply_payment_state(portal, actor=actor)
    return portal


def _apply_payment_state(portal: Portal, *, actor: str) -> None:
    blocked_for_payment = portal.status == Status.BLOCKED and portal.blocked_reason.startswith("payment")
    if payment_blocks({"payment_expired": portal.payment_expired, "payment_days": portal.payment_days}):
        if portal.status == Status.ACTIVE:
            _set_status(portal, Status.BLOCKED, message="blocked: payment required", actor=actor,
                        level="warning", blocked_reason="payment required")
    elif blocked_for_payment:
        _set_status(portal, Status.ACTIVE, message="unblocked: payment received", actor=actor, blocked_reason="")


# -- install --------------------------------------------------------------------------------------------
def do_begin_install(*, member_id: str, domain: str, rest_endpoint: str, app_info: Mapping[str, Any],
                     user: Mapping[str, Any], grant: TokenGrant, application_token: str | None,
                     language: str, trigger: str) -> InstallRun:
    """Upsert the portal after its token was proven, store the installer's tokens as the service token,
    and start (or reuse) an install run. Re-posting the same install changes nothing and reuses the run."""
    from oauth.tokens import store_tokens

    now = timezone.now()
    user_id = int(user.get("ID") or 0) or int(grant.user_id or 0)
    user_name = " ".join(str(user.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
    with transaction.atomic():
        portal, created = Portal.objects.select_for_update().get_or_create(
            member_id=member_id, defaults={"domain": domain, "rest_endpoint": rest_endpoint, "language": language,
                                           "install_started_at": now},
        )
        fresh_install = created or portal.status in (Status.DELETED, Status.NEEDS_REINSTALL)
        if not created and portal.status == Status.NEW and portal.install_started_at and (
            now - portal.install_started_at > timedelta(minutes=settings.B24_INSTALL_TIMEOUT_MINUTES)
        ):
            fresh_install = True  # a half-finished install is started again from scratch
        portal.domain, portal.rest_endpoint = domain, rest_endpoint
        portal.language = language or portal.language
        for name, value in app_info_fields(app_info).items():
            setattr(portal, name, value)
        if application_token:
            portal.application_token_hash = hash_application_token(application_token)
        if user_id:
            portal.installed_by_user_id = user_id
            portal.installed_by_name = user_name[:255]
        if fresh_install:
            portal.install_started_at = now
            portal.installed_at = None
            portal.uninstalled_at = None
        portal.save()
        if user_id:
            store_tokens(portal, grant, user_id=user_id, is_service=True, is_admin=True)

        if created:
            journal(portal, JournalEntry.Kind.LIFECYCLE, f"install started ({trigger}) by user {user_id}",
                    actor="bitrix24", details={"domain": domain, "trigger": trigger})
        elif fresh_install:
            _set_status(portal, Status.NEW, message=f"reinstall started ({trigger}) by user {user_id}",
                        actor="bitrix24", install_started_at=now)
        else:
            journal(portal, JournalEntry.Kind.LIFECYCLE, f"install posted again ({trigger})", actor="bitrix24")

        run = None if fresh_install else portal.install_runs.exclude(status=InstallRun.Status.FAILED).first()
        if run is None:
            run = _start_run(portal, trigger)
    return run


def _start_run(portal: Portal, trigger: str) -> InstallRun:
    from .tasks import run_install_steps

    run = InstallRun.objects.create(portal=portal, trigger=trigger)
    InstallStepResult.objects.bulk_create(
        InstallStepResult(run=run, name=step.name, title=step.title, order=step.order) for step in get_install_steps()
    )
    transaction.on_commit(lambda: run_install_steps.delay(run.pk))
    return run


def do_start_install_run(portal: Portal, *, trigger: str, actor: str = "system",
                         staff_user: AbstractBaseUser | None = None) -> InstallRun:
    with transaction.atomic():
        run = _start_run(portal, trigger)
        journal(portal, JournalEntry.Kind.STAFF if staff_user else JournalEntry.Kind.LIFECYCLE,
                f"install steps started ({trigger})", actor=actor, staff_user=staff_user)
    return run


def do_retry_install_run(run: InstallRun) -> InstallRun:
    """The install page's retry button: run the failed steps of the same run again."""
    from .tasks import run_install_steps

    with transaction.atomic():
        run = InstallRun.objects.select_for_update().get(pk=run.pk)
        if run.status != InstallRun.Status.FAILED:
            return run
        run.steps.exclude(status=InstallStepResult.Status.SUCCEEDED).update(
            status=InstallStepResult.Status.PENDING, message=""
        )
        run.status = InstallRun.Status.PENDING
        run.finished_at = None
        run.save(update_fields=["status", "finished_at"])
        journal(run.portal, JournalEntry.Kind.LIFECYCLE, "install steps retried from the install page",
                actor="bitrix24")
        transaction.on_commit(lambda: run_install_steps.delay(run.pk))
    return run


def do_finish_install_run(run: InstallRun, *, succeeded: bool) -> None:
    """Close a run; a portal whose install (or update) succeeded becomes active."""
    with transaction.atomic():
        run.status = InstallRun.Status.SUCCEEDED if succeeded else InstallRun.Status.FAILED
        run.finished_at = timezone.now()
        run.save(update_fields=["status", "finished_at"])
        portal = Portal.objects.select_for_update().get(pk=run.portal_id)
        if not succeeded:
            failed = list(run.steps.filter(status=InstallStepResult.Status.FAILED).values_list("name", "message"))
            journal(portal, JournalEntry.Kind.INSTALL_STEP, "install steps failed: " +
                    "; ".join(f"{name}: {message}" for name, message in failed), level="error",
                    details={"run": str(run.public_id)})
            return
        if portal.status in (Status.NEW, Status.NEEDS_REINSTALL):
            _set_status(portal, Status.ACTIVE, message="installed and verified", actor="system",
                        installed_at=timezone.now())
            _apply_payment_state(portal, actor="system")
        else:
            journal(portal, JournalEntry.Kind.INSTALL_STEP, f"install steps succeeded ({run.trigger})")


def do_cleanup_stale_installs(now: Any = None) -> int:
    """Installs that never finished: forget their tokens and mark them uninstalled."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.B24_INSTALL_TIMEOUT_MINUTES)
    count = 0
    for portal_id in Portal.objects.filter(status=Status.NEW, install_started_at__lt=cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            portal = Portal.objects.select_for_update().get(pk=portal_id)
            if portal.status != Status.NEW or (portal.install_started_at and portal.install_started_at >= cutoff):
                continue
            _purge(portal)
            _set_status(portal, Status.DELETED, message="install never finished; cleaned up", actor="system",
                        level="warning", uninstalled_at=now)
            count += 1
    return count


# -- status changes -------------------------------------------------------------------------------------
def do_block_portal(portal: Portal, *, reason: str, actor: str = "system",
                    staff_user: AbstractBaseUser | None = None) -> bool:
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if portal.status in (Status.BLOCKED, Status.DELETED):
            return False
        _set_status(portal, Status.BLOCKED, message=f"blocked: {reason}", level="warning",
                    actor=_actor_for(staff_user, actor), staff_user=staff_user, blocked_reason=reason[:255])
    return True


def do_unblock_portal(portal: Portal, *, actor: str = "system", staff_user: AbstractBaseUser | None = None) -> bool:
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if portal.status != Status.BLOCKED:
            return False
        _set_status(portal, Status.ACTIVE, message="unblocked", actor=_actor_for(staff_user, actor),
                    staff_user=staff_user, blocked_reason="")
    return True


def do_mark_needs_reinstall(portal: Portal, *, reason: str, actor: str = "system") -> bool:
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if portal.status in (Status.NEEDS_REINSTALL, Status.DELETED):
            return False
        _set_status(portal, Status.NEEDS_REINSTALL, message=f"needs reinstall: {reason}", level="error", actor=actor)
    return True


def do_change_domain(portal: Portal, *, domain: str, rest_endpoint: str, source: str) -> None:
    with transaction.atomic():
        previous = Portal.objects.select_for_update().values_list("domain", flat=True).get(pk=portal.pk)
        Portal.objects.filter(pk=portal.pk).update(domain=domain, rest_endpoint=rest_endpoint)
        portal.domain, portal.rest_endpoint = domain, rest_endpoint
        if previous != domain:
            journal(portal, JournalEntry.Kind.LIFECYCLE, f"portal renamed: {previous} → {domain} ({source})",
                    level="warning", actor="bitrix24", details={"from": previous, "to": domain})


def _purge(portal: Portal) -> None:
    """Forget a portal's tokens and data (other apps delete theirs on `portal_purged`); keep its journal."""
    from oauth.tokens import purge_tokens

    purge_tokens(portal)
    portal_purged.send(sender=Portal, portal=portal)


# -- Bitrix24 app events --------------------------------------------------------------------------------
def do_uninstall_portal(portal: Portal, *, clean: bool) -> None:
    """ONAPPUNINSTALL: API access is already revoked. CLEAN=1 purges data; 0 keeps it for a reinstall."""
    from oauth.tokens import purge_tokens

    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if clean:
            _purge(portal)
            portal.handler_key = new_handler_key()
            portal.save(update_fields=["handler_key"])
        else:
            purge_tokens(portal)  # revoked by Bitrix24 anyway
        if portal.status == Status.DELETED:
            journal(portal, JournalEntry.Kind.EVENT, "ONAPPUNINSTALL again (already uninstalled)", actor="bitrix24")
            return
        _set_status(portal, Status.DELETED, message=f"uninstalled ({'data purged' if clean else 'data kept'})",
                    actor="bitrix24", uninstalled_at=timezone.now(), details={"clean": clean})


def do_app_update(portal: Portal, *, application_token: str, version: int | None, app_info: Mapping[str, Any],
                  user: Mapping[str, Any], grant: TokenGrant | None) -> InstallRun | None:
    """ONAPPUPDATE, already proven through app.info: keep the new application token and version, and run
    the install steps again (Bitrix24 drops handlers, placements and senders on update)."""
    from oauth.tokens import store_tokens

    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        portal.application_token_hash = hash_application_token(application_token)
        for name, value in app_info_fields(app_info).items():
            setattr(portal, name, value)
        if version is not None:
            portal.installed_version = version
        portal.save()
        user_id = int(user.get("ID") or 0)
        if grant is not None and user_id:
            has_service = portal.tokens.filter(is_service=True).exists()
            store_tokens(portal, grant, user_id=user_id, is_service=not has_service or
                         portal.tokens.filter(is_service=True, user_id=user_id).exists())
        journal(portal, JournalEntry.Kind.EVENT, f"app updated to version {portal.installed_version}",
                actor="bitrix24", details={"version": version})
        if portal.status in (Status.DELETED,):
            return None
        return _start_run(portal, InstallRun.Trigger.UPDATE)


def do_apply_payment_event(portal: Portal, *, app_info: Mapping[str, Any]) -> None:
    """ONAPPPAYMENT: status and payment fields (taken from app.info, the trusted source)."""
    do_record_app_info(portal, app_info, actor="bitrix24")


def bump_step_attempt(step: InstallStepResult) -> None:
    InstallStepResult.objects.filter(pk=step.pk).update(attempts=F("attempts") + 1,
                                                       status=InstallStepResult.Status.RUNNING)
