"""Install-run bookkeeping and clean-up, used by the install tasks (nothing here dispatches Celery work,
so the tasks can import it without importing the actions that dispatch them)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, QuerySet
from django.utils import timezone

from oauth.tokens import purge_tokens
from tenants import schedule
from tenants.actions import apply_payment_state, set_status
from tenants.journal import Actor, journal
from tenants.models import InstallRun, InstallStepResult, JournalEntry, Portal
from tenants.signals import portal_purged

Status = Portal.Status


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
            schedule.ensure_portal_scheduled(portal)
            set_status(portal, Status.ACTIVE, message="installed and verified", actor=Actor.SYSTEM,
                        installed_at=timezone.now())
            apply_payment_state(portal, actor=Actor.SYSTEM)
        else:
            journal(portal, JournalEntry.Kind.INSTALL_STEP, f"install steps succeeded ({run.trigger})")


def _stuck_before(now: Any = None) -> Any:
    return (now or timezone.now()) - timedelta(seconds=settings.B24_INSTALL_REDISPATCH_AFTER_SECONDS)


def stuck_runs(now: Any = None) -> QuerySet[InstallRun]:
    """Pending runs that made no progress for B24_INSTALL_REDISPATCH_AFTER_SECONDS: their task was lost (the
    broker was down when they were dispatched) and they may be dispatched again."""
    return InstallRun.objects.filter(status=InstallRun.Status.PENDING,  # index install_run_pending
                                     progress_at__lt=_stuck_before(now))


def is_stuck(run: InstallRun, now: Any = None) -> bool:
    """`stuck_runs` for a run already in hand."""
    return run.status == InstallRun.Status.PENDING and run.progress_at < _stuck_before(now)


def never_started(run: InstallRun) -> bool:
    """Pending, and not one step was ever attempted: no worker has seen this run (its dispatch was lost)."""
    return run.status == InstallRun.Status.PENDING and not run.steps.filter(attempts__gt=0).exists()


def claim_for_redispatch(run: InstallRun, now: Any = None) -> bool:
    """Move a stuck run's clock forward; True for the one caller that may dispatch it again."""
    now = now or timezone.now()
    return bool(stuck_runs(now).filter(pk=run.pk).update(progress_at=now))


def do_cleanup_stale_installs(now: Any = None) -> int:
    """Installs that never finished: forget their tokens and mark them uninstalled. A portal whose latest
    run was merely never dispatched (broker down) is not an abandoned install: it is left for the sweeper
    (`tasks.redispatch_stuck_install_runs`), which dispatches that run again."""
    now = now or timezone.now()
    cutoff = now - timedelta(minutes=settings.B24_INSTALL_TIMEOUT_MINUTES)
    count = 0
    for portal_id in Portal.objects.filter(status=Status.NEW, install_started_at__lt=cutoff).values_list("pk", flat=True):
        with transaction.atomic():
            portal = Portal.objects.select_for_update().get(pk=portal_id)
            if portal.status != Status.NEW or (portal.install_started_at and portal.install_started_at >= cutoff):
                continue
            latest = portal.install_runs.first()
            if latest is not None and never_started(latest):
                journal(portal, JournalEntry.Kind.LIFECYCLE,
                        "install not finished: its steps were never run (task lost); dispatching them again",
                        level="warning", actor=Actor.SYSTEM, details={"run": str(latest.public_id)})
                continue
            purge_portal(portal)
            set_status(portal, Status.DELETED, message="install never finished; cleaned up", actor=Actor.SYSTEM,
                        level="warning", uninstalled_at=now)
            count += 1
    return count


def purge_portal(portal: Portal) -> None:
    """Forget a portal's tokens and data (other apps delete theirs on `portal_purged`); keep its journal."""
    purge_tokens(portal)
    portal_purged.send(sender=Portal, portal=portal)


def bump_step_attempt(step: InstallStepResult) -> None:
    InstallStepResult.objects.filter(pk=step.pk).update(attempts=F("attempts") + 1,
                                                       status=InstallStepResult.Status.RUNNING)
