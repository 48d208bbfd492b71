"""The install, update and uninstall flow as `do_*` actions: what needs tokens and install runs.

Each action runs in `transaction.atomic()`, writes a journal entry, and dispatches Celery work only on
commit. Status changes that need no REST live in tenants.actions; this module builds on them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from oauth.tokens import TokenGrant, purge_tokens, store_tokens
from tenants import schedule
from tenants.actions import app_info_fields, do_record_app_info, set_status
from tenants.journal import Actor, journal
from tenants.models import (
    InstallRun,
    InstallStepResult,
    JournalEntry,
    Portal,
    hash_application_token,
    new_handler_key,
)

from . import runs
from .runs import purge_portal
from .steps import get_install_steps
from .tasks import run_install_steps
from .webhooks import refuse_app_only

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)

Status = Portal.Status


# -- install --------------------------------------------------------------------------------------------
def do_begin_install(*, member_id: str, domain: str, rest_endpoint: str, app_info: Mapping[str, Any],
                     user: Mapping[str, Any], grant: TokenGrant | None, application_token: str | None,
                     language: str, trigger: str) -> InstallRun:
    """Upsert the portal after its token was proven, store the installer's tokens as the service token,
    and start (or reuse) an install run. Re-posting the same install changes nothing and reuses the run."""
    now = timezone.now()
    user_id = int(user.get("ID") or 0) or int((grant.user_id if grant else 0) or 0)
    user_name = " ".join(str(user.get(k) or "") for k in ("NAME", "LAST_NAME")).strip()
    with transaction.atomic():
        portal, created = Portal.objects.select_for_update().get_or_create(
            member_id=member_id, defaults={"domain": domain, "rest_endpoint": rest_endpoint, "language": language,
                                           "install_started_at": now},
        )
        refuse_app_only(portal, "an app install")  # never an app install onto a webhook portal
        fresh_install = created or portal.status in (Status.DELETED, Status.NEEDS_REINSTALL)
        if not created and portal.status == Status.NEW and portal.install_started_at and (
            now - portal.install_started_at > timedelta(minutes=settings.B24_INSTALL_TIMEOUT_MINUTES)
        ):
            fresh_install = True  # a half-finished install is started again from scratch
        portal.domain, portal.rest_endpoint = domain, rest_endpoint
        portal.language = language or portal.language
        for name, value in app_info_fields(app_info).items():
            setattr(portal, name, value)
        if application_token and (fresh_install or not portal.application_token_hash):
            # An installed portal's application token changes only through ONAPPUPDATE (do_app_update).
            portal.application_token_hash = hash_application_token(application_token)
        if user_id:
            portal.installed_by_user_id = user_id
            portal.installed_by_name = user_name[:255]
        if fresh_install:
            portal.install_generation += 1  # frame tokens of the previous installation stop working
            portal.install_started_at = now
            portal.installed_at = None
            portal.uninstalled_at = None
        portal.save()
        if user_id and grant is not None:
            store_tokens(portal, grant, user_id=user_id, is_service=True, is_admin=True)

        if created:
            journal(portal, JournalEntry.Kind.LIFECYCLE, f"install started ({trigger}) by user {user_id}",
                    actor=Actor.BITRIX24, details={"domain": domain, "trigger": trigger})
        elif fresh_install:
            set_status(portal, Status.NEW, message=f"reinstall started ({trigger}) by user {user_id}",
                        actor=Actor.BITRIX24, install_started_at=now)
        else:
            journal(portal, JournalEntry.Kind.LIFECYCLE, f"install posted again ({trigger})", actor=Actor.BITRIX24)

        run = None if fresh_install else portal.install_runs.exclude(status=InstallRun.Status.FAILED).first()
        if run is None:
            run = _start_run(portal, trigger)
        elif run.status == InstallRun.Status.PENDING:
            _redispatch_if_stuck(run)  # its task was lost (broker down): re-posting brings it back
    return run


def _redispatch_if_stuck(run: InstallRun) -> bool:
    if not runs.claim_for_redispatch(run):
        return False
    journal(run.portal, JournalEntry.Kind.LIFECYCLE, "install steps dispatched again (their task was lost)",
            level="warning", actor=Actor.SYSTEM, details={"run": str(run.public_id)})
    dispatch_on_commit(run_install_steps, run.pk)
    return True


def _start_run(portal: Portal, trigger: str) -> InstallRun:
    refuse_app_only(portal, "install steps")  # AppContextRequired (409): nothing is started
    run = InstallRun.objects.create(portal=portal, trigger=trigger)
    InstallStepResult.objects.bulk_create(
        InstallStepResult(run=run, name=step.name, title=step.title, order=step.order) for step in get_install_steps()
    )
    dispatch_on_commit(run_install_steps, run.pk)
    return run


def do_start_install_run(portal: Portal, *, trigger: str, actor: Actor | str = Actor.SYSTEM,
                         staff_user: User | None = None) -> InstallRun:
    with transaction.atomic():
        run = _start_run(portal, trigger)
        journal(portal, JournalEntry.Kind.STAFF if staff_user else JournalEntry.Kind.LIFECYCLE,
                f"install steps started ({trigger})", actor=actor, staff_user=staff_user)
    return run


def can_retry(run: InstallRun) -> bool:
    """The retry button applies to a failed run and to a pending run whose task was lost."""
    return run.status == InstallRun.Status.FAILED or runs.is_stuck(run)


def do_retry_install_run(run: InstallRun) -> InstallRun:
    """The install page's retry button: run the failed steps of the same run again (or dispatch again a
    pending run whose task was lost)."""
    with transaction.atomic():
        run = InstallRun.objects.select_for_update().get(pk=run.pk)
        if run.status == InstallRun.Status.PENDING:
            _redispatch_if_stuck(run)
            return run
        if run.status != InstallRun.Status.FAILED:
            return run
        run.steps.exclude(status=InstallStepResult.Status.SUCCEEDED).update(
            status=InstallStepResult.Status.PENDING, message=""
        )
        run.status = InstallRun.Status.PENDING
        run.finished_at = None
        run.progress_at = timezone.now()
        run.save(update_fields=["status", "finished_at", "progress_at"])
        journal(run.portal, JournalEntry.Kind.LIFECYCLE, "install steps retried from the install page",
                actor=Actor.BITRIX24)
        dispatch_on_commit(run_install_steps, run.pk)
    return run


# -- Bitrix24 app events --------------------------------------------------------------------------------
def do_uninstall_portal(portal: Portal, *, clean: bool) -> None:
    """ONAPPUNINSTALL: API access is already revoked. CLEAN=1 purges data; 0 keeps it for a reinstall."""
    with transaction.atomic():
        portal = Portal.objects.select_for_update().get(pk=portal.pk)
        if clean:
            purge_portal(portal)
            portal.handler_key = new_handler_key()
            portal.save(update_fields=["handler_key"])
        else:
            purge_tokens(portal)  # revoked by Bitrix24 anyway
        if portal.status == Status.DELETED:
            journal(portal, JournalEntry.Kind.EVENT, "ONAPPUNINSTALL again (already uninstalled)", actor=Actor.BITRIX24)
            return
        set_status(portal, Status.DELETED, message=f"uninstalled ({'data purged' if clean else 'data kept'})",
                   actor=Actor.BITRIX24, uninstalled_at=timezone.now(), details={"clean": clean},
                   install_generation=portal.install_generation + 1)


def do_app_update(portal: Portal, *, application_token: str, version: int | None, app_info: Mapping[str, Any],
                  user: Mapping[str, Any], grant: TokenGrant | None) -> InstallRun | None:
    """ONAPPUPDATE, already proven through app.info: keep the new application token and version, and run
    the install steps again (Bitrix24 drops handlers, placements and senders on update)."""
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
            # The updater's pair becomes the service token unless another user's already is.
            another_is_service = portal.tokens.filter(is_service=True).exclude(user_id=user_id).exists()
            store_tokens(portal, grant, user_id=user_id, is_service=not another_is_service)
        journal(portal, JournalEntry.Kind.EVENT, f"app updated to version {portal.installed_version}",
                actor=Actor.BITRIX24, details={"version": version})
        if portal.status in (Status.DELETED,):
            return None
        # Bitrix24 drops handlers, placements and senders on update: every check is due now.
        schedule.mark_due(portal, *schedule.registered_kinds())
        return _start_run(portal, InstallRun.Trigger.UPDATE)


def do_apply_payment_event(portal: Portal, *, app_info: Mapping[str, Any]) -> None:
    """ONAPPPAYMENT: status and payment fields (taken from app.info, the trusted source)."""
    do_record_app_info(portal, app_info, actor=Actor.BITRIX24)
