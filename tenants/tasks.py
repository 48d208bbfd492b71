"""Celery tasks of the portal lifecycle."""

from __future__ import annotations

import logging

from celery import shared_task
from django.utils import timezone

from b24portal.logging import log_context
from oauth.client import PortalClient, retry_delay
from oauth.errors import B24Error

from . import actions
from .install_steps import StepFailed, get_install_step
from .models import InstallRun, InstallStepResult, JournalEntry, Portal

logger = logging.getLogger(__name__)

MAX_STEP_RETRIES = 8


@shared_task(bind=True, max_retries=MAX_STEP_RETRIES, acks_late=True)
def run_install_steps(self, run_id: int) -> str:
    """Run the pending steps of an install run in order; a rate limit retries the task later (never sleeps
    in the worker); a failed step fails the run with its reason."""
    run = InstallRun.objects.select_related("portal").get(pk=run_id)
    portal = run.portal
    if run.status in (InstallRun.Status.SUCCEEDED, InstallRun.Status.FAILED):
        return run.status
    with log_context(member_id=portal.member_id, install_run=str(run.public_id)):
        InstallRun.objects.filter(pk=run.pk).update(status=InstallRun.Status.RUNNING)
        client = PortalClient(portal)
        steps = list(run.steps.exclude(status=InstallStepResult.Status.SUCCEEDED))
        for result in steps:
            step = get_install_step(result.name)
            actions.bump_step_attempt(result)
            try:
                if step is None:
                    raise StepFailed("this step no longer exists")
                report = step.func(portal, client)
            except B24Error as exc:
                if exc.retryable and self.request.retries < self.max_retries:
                    InstallStepResult.objects.filter(pk=result.pk).update(
                        status=InstallStepResult.Status.PENDING, message=f"waiting: {exc.code}")
                    raise self.retry(countdown=retry_delay(exc, self.request.retries)) from exc
                _fail_step(result, f"{exc.code}: {exc.description}"[:500])
                break
            except StepFailed as exc:
                _fail_step(result, str(exc)[:500])
                break
            InstallStepResult.objects.filter(pk=result.pk).update(
                status=InstallStepResult.Status.SUCCEEDED, message=str(report)[:500], finished_at=timezone.now())
            actions.journal(portal, JournalEntry.Kind.INSTALL_STEP, f"{result.title}: {report}")
        succeeded = not run.steps.exclude(status=InstallStepResult.Status.SUCCEEDED).exists()
        actions.do_finish_install_run(run, succeeded=succeeded)
        return "succeeded" if succeeded else "failed"


def _fail_step(result: InstallStepResult, message: str) -> None:
    InstallStepResult.objects.filter(pk=result.pk).update(
        status=InstallStepResult.Status.FAILED, message=message, finished_at=timezone.now())


@shared_task
def cleanup_stale_installs() -> int:
    return actions.do_cleanup_stale_installs()


@shared_task(bind=True, max_retries=5)
def verify_portal(self, portal_id: int, staff_user_id: int | None = None) -> str:
    """"Verify now": app.info with the service token, stored and journaled."""
    from django.contrib.auth import get_user_model

    portal = Portal.objects.get(pk=portal_id)
    staff_user = get_user_model().objects.filter(pk=staff_user_id).first() if staff_user_id else None
    with log_context(member_id=portal.member_id):
        try:
            info = PortalClient(portal).call("app.info")
        except B24Error as exc:
            if exc.retryable and self.request.retries < self.max_retries:
                raise self.retry(countdown=retry_delay(exc, self.request.retries)) from exc
            actions.journal(portal, JournalEntry.Kind.REST, f"verify failed: {exc.code} {exc.description}",
                            level="error", staff_user=staff_user,
                            actor=f"staff:{staff_user.get_username()}" if staff_user else "system")
            return exc.code
        actions.do_record_app_info(portal, info, staff_user=staff_user,
                                   actor=f"staff:{staff_user.get_username()}" if staff_user else "system")
        return "ok"
