"""Our own site's pages outside Bitrix24: the home page with "Sign in with Bitrix24", the redirect URI,
sign-out. Thin: the flow is in `flow.py`. None of these pages may be framed (X-Frame-Options: DENY and
CSP frame-ancestors 'none'), none is cached, and none sends its URL (the callback's carries a code) to
another site in a Referer."""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.clickjacking import xframe_options_deny
from django.views.decorators.http import require_GET, require_POST

from b24portal.intake import Rejected
from b24portal.throttle import throttled

from . import flow

logger = logging.getLogger(__name__)


def not_framed(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Refusals become a page with the reason (never a 500); the answer may not be framed or cached."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            response = view(request, *args, **kwargs)
        except Rejected as exc:
            logger.info("sign-in refused", extra={"reason": exc.reason, "status": exc.status})
            response = render(request, "signin/problem.html", {
                "reason": exc.reason,
                "install_hint": flow.INSTALL_HINT if getattr(exc, "install_hint", False) else "",
            }, status=exc.status)
        response["Content-Security-Policy"] = "frame-ancestors 'none'"
        response["Cache-Control"] = "no-store"
        response["Referrer-Policy"] = "same-origin"  # no-referrer would make the form POSTs send Origin: null (CSRF)
        return response

    return xframe_options_deny(wrapper)


@require_GET
@not_framed
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "signin/home.html", {"signed_in": flow.signed_in_as(request.session)})


@require_POST  # CSRF-protected: a foreign page cannot start a sign-in in this browser
@throttled("signin", "B24_THROTTLE_FRAMES")
@not_framed
def start(request: HttpRequest) -> HttpResponse:
    portal = flow.portal_for_address(request.POST.get("portal"))
    return HttpResponseRedirect(flow.begin(request.session, portal))


@require_GET
@throttled("signin", "B24_THROTTLE_FRAMES")
@not_framed
def callback(request: HttpRequest) -> HttpResponse:
    signed_in = flow.complete(request.session, request.GET)
    flow.open_session(request.session, signed_in)
    logger.info("signed in with Bitrix24", extra={"member_id": signed_in.portal.member_id,
                                                  "user_id": signed_in.user_id})
    return HttpResponseRedirect(flow.AFTER_SIGNIN_URL)


@require_POST
@not_framed
def signout(request: HttpRequest) -> HttpResponse:
    request.session.flush()
    return HttpResponseRedirect("/")
