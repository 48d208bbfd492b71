"""Install and app-event endpoints. Thin: parse (intake), prove and act (lifecycle), answer."""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render
from django.utils import translation
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from b24portal.intake import Rejected, frame_response, nested, read_form, rejects_bad_input
from b24portal.logging import bind_log_context
from b24portal.throttle import throttled
from tenants.models import InstallRun

from . import actions, intake, lifecycle

logger = logging.getLogger(__name__)


@csrf_exempt  # Bitrix24 POSTs cross-site into its iframe; the token proof replaces CSRF here
@require_POST
@throttled("install", "B24_THROTTLE_FRAMES")
@rejects_bad_input
def install(request: HttpRequest) -> HttpResponse:
    form = read_form(request)
    if form.get("event"):
        event = intake.parse_event(nested(form))
        if event.name != "ONAPPINSTALL":
            raise Rejected("only ONAPPINSTALL is accepted here; app events go to /b24/events/")
        bind_log_context(member_id=event.member_id)
        run = lifecycle.handle_install(intake.install_from_event(event))
        # No page and no installFinish: an app installed by event has no UI step.
        return JsonResponse({"ok": True, "install_run": str(run.public_id)})
    install_request = intake.parse_install_frame(request.GET, form)
    bind_log_context(member_id=install_request.member_id)
    run = lifecycle.handle_install(install_request)
    with translation.override(install_request.language.split("-")[0].split("_")[0]):
        response = render(request, "installs/install.html", {"run": run, "portal": run.portal,
                                                            "lang": install_request.language,
                                                            "bx24_sdk_url": settings.B24_JS_SDK_URL})
    return frame_response(response, run.portal.origin)


@csrf_exempt
@require_POST
@throttled("events", "B24_THROTTLE_EVENTS")
@rejects_bad_input
def events(request: HttpRequest) -> HttpResponse:
    event = intake.parse_event(nested(read_form(request)))
    bind_log_context(member_id=event.member_id, event=event.name)
    return JsonResponse({"ok": True, **lifecycle.handle_event(event)})


def _run_state(run: InstallRun) -> dict[str, Any]:
    return {
        "status": run.status,
        "steps": [{"name": s.name, "title": s.title, "status": s.status, "message": s.message}
                  for s in run.steps.all()],
    }


@require_GET
def install_run_status(request: HttpRequest, public_id: str) -> JsonResponse:
    """Polled by the install page. The run's UUID is unguessable and is the capability to read it."""
    run = get_object_or_404(InstallRun, public_id=public_id)
    return JsonResponse(_run_state(run))


@csrf_exempt  # called from the framed install page, which has no cookie; the run UUID is the capability
@require_POST
def install_run_retry(request: HttpRequest, public_id: str) -> JsonResponse:
    run = get_object_or_404(InstallRun, public_id=public_id)
    if not actions.can_retry(run):
        return JsonResponse({"error": "only a failed (or stuck) install can be retried", **_run_state(run)},
                            status=409)
    run = actions.do_retry_install_run(run)
    return JsonResponse(_run_state(run))
