"""Celery tasks of the install flow. The task names are kept from when they lived in tenants, so work
queued before an upgrade is still found by the workers."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import Task, shared_task
from django.utils import timezone

from b24portal.dispatch import redispatch_late
from b24portal.logging import log_context
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.retry import portal_task, retry_if_worth_it
from tenants.actions import do_record_app_info
from tenants.journal import journal, staff_actor
from tenants.models import InstallRun, InstallStepResult, JournalEntry, Portal

from . import runs
from .steps import StepFailed, get_install_step

if TYPE_CHECKING:
    pass

logger = logging.getLogger(__name__)

MAX_STEP_RETRIES = 8


@shared_task(bind=True, max_retries=MAX_STEP_RETRIES, acks_late=True, name="tenants.tasks.run_install_steps")
def run_install_steps(self: Task, run_id: int) -> str:
    """Run the pending steps of an install run in order; a rate limit retries the task later (never sleeps
    in the worker); a failed step fails the run with its reason."""
    run = InstallRun.objects.select_related("portal").get(pk=run_id)
    portal = run.portal
    if run.status in (InstallRun.Status.SUCCEEDED, InstallRun.Status.FAILED):
        return run.status
    with log_context(member_id=portal.member_id, install_run=str(run.public_id)):
        InstallRun.objects.filter(pk=run.pk).update(status=InstallRun.Status.RUNNING, progress_at=timezone.now())
        client = PortalClient(portal)
        steps = list(run.steps.exclude(status=InstallStepResult.Status.SUCCEEDED))
        for result in steps:
            step = get_install_step(result.name)
            runs.bump_step_attempt(result)
            try:
                if step is None:
                    raise StepFailed("this step no longer exists")
                report = step.func(portal, client)
            except B24Error as exc:
                if exc.retryable:
                    InstallStepResult.objects.filter(pk=result.pk).update(
                        status=InstallStepResult.Status.PENDING, message=f"waiting: {exc.code}")
                retry_if_worth_it(self, exc)
                _fail_step(result, f"{exc.code}: {exc.description}"[:500])
                break
            except StepFailed as exc:
                _fail_step(result, str(exc)[:500])
                break
            InstallStepResult.objects.filter(pk=result.pk).update(
                status=InstallStepResult.Status.SUCCEEDED, message=str(report)[:500], finished_at=timezone.now())
            InstallRun.objects.filter(pk=run.pk).update(progress_at=timezone.now())
            journal(portal, JournalEntry.Kind.INSTALL_STEP, f"{result.title}: {report}")
        succeeded = not run.steps.exclude(status=InstallStepResult.Status.SUCCEEDED).exists()
        runs.do_finish_install_run(run, succeeded=succeeded)
        return "succeeded" if succeeded else "failed"


def _fail_step(result: InstallStepResult, message: str) -> None:
    InstallStepResult.objects.filter(pk=result.pk).update(
        status=InstallStepResult.Status.FAILED, message=message, finished_at=timezone.now())


@shared_task(name="tenants.tasks.cleanup_stale_installs")
def cleanup_stale_installs() -> int:
    # A run that was never dispatched is skipped here (runs.never_started) and left to the beat sweeper.
    return runs.do_cleanup_stale_installs()


@shared_task
def redispatch_stuck_install_runs() -> int:
    """Beat: pending install runs with no progress for B24_INSTALL_REDISPATCH_AFTER_SECONDS lost their task
    (broker down at commit): dispatch them again, once per claim. Runs of uninstalled portals stay."""
    now = timezone.now()
    stuck = runs.stuck_runs(now).exclude(portal__status=Portal.Status.DELETED)
    return redispatch_late(stuck, "progress_at", run_install_steps, now=now, limit=500)


def _verify_failed(exc: B24Error, portal_id: int, staff_user_id: int | None = None) -> str:
    staff_user, actor = staff_actor(staff_user_id)
    journal(Portal.objects.get(pk=portal_id), JournalEntry.Kind.REST,
            f"verify failed: {exc.code} {exc.description}", level="error", staff_user=staff_user, actor=actor)
    return exc.code


@portal_task(max_retries=5, give_up=_verify_failed, name="tenants.tasks.verify_portal")
def verify_portal(self: Task, portal_id: int, staff_user_id: int | None = None) -> str:
    """"Verify now": app.info with the service token, stored and journaled (an installed app only)."""
    portal = Portal.objects.get(pk=portal_id)
    if portal.is_webhook:
        return "skipped: connected by an incoming webhook (app.info needs the installed app)"
    staff_user, actor = staff_actor(staff_user_id)
    with log_context(member_id=portal.member_id):
        info = PortalClient(portal).call("app.info")
        do_record_app_info(portal, info, staff_user=staff_user, actor=actor)
        return "ok"
