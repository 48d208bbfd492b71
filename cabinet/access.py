"""Who is looking at a cabinet page: a frame or a signed-in session, read the same way.

- **Frame** (inside Bitrix24; the app page links here): the page is POSTed with `frame_token`, the signed
  frame token the app page was given (placements.frames). Every navigation inside the frame is a POST that
  carries it on, so no third-party cookie is needed; the token stands in for the CSRF token (a cross-site
  page cannot know it). The answer may be framed by that portal only.
- **Session** (our own site, after "Sign in with Bitrix24"): the sign-in stores a frame token under
  `SESSION_KEY`; pages are ordinary GETs and CSRF-protected POSTs, never framed (X-Frame-Options: DENY).

Both go through `placements.frames.read_frame_token`, so the install-generation rule (void after a
reinstall) and the admin re-proof (user.admin once the claim is older than B24_ADMIN_PROOF_SECONDS) apply
alike. A missing, expired or void token is a 401 page that says how to get in; an inactive portal a 403.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.shortcuts import render
from django.utils import translation
from django.utils.translation import gettext_noop
from django.views.decorators.csrf import csrf_exempt

from b24portal.intake import Rejected, frame_response, read_form
from placements.frames import SESSION_FRAME_TOKEN_KEY, FramePrincipal, read_frame_token

logger = logging.getLogger(__name__)

SESSION_KEY = SESSION_FRAME_TOKEN_KEY  # written by the sign-in
FRAME_FIELD = "frame_token"
MAX_TOKEN_CHARS = 2048


@dataclass(frozen=True)
class Visit:
    principal: FramePrincipal
    framed: bool
    token: str  # handed on by every in-frame navigation; the JSON API takes it too

    @property
    def portal(self) -> Any:
        return self.principal.portal

    @property
    def user_id(self) -> int:
        return self.principal.user_id

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def _token_visit(token: Any, *, framed: bool) -> Visit:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise Rejected(gettext_noop("invalid frame token"), 401)
    return Visit(read_frame_token(token), framed=framed, token=token)


def read_visit(request: HttpRequest) -> Visit | None:
    """The visit, None when nobody is signed in; raises Rejected for a bad token or an inactive portal."""
    if request.method == "POST" and request.content_type in ("application/x-www-form-urlencoded",
                                                              "multipart/form-data"):
        form = read_form(request)
        if FRAME_FIELD in form:
            return _token_visit(form.get(FRAME_FIELD), framed=True)
    token = request.session.get(SESSION_KEY) if hasattr(request, "session") else None
    if token is None:
        return None
    try:
        return _token_visit(token, framed=False)
    except Rejected:
        request.session.pop(SESSION_KEY, None)  # expired or void: sign in again
        raise


def _refused(request: HttpRequest, reason: str, status: int) -> HttpResponse:
    # The reason is translated on the page (the token reasons are marked with gettext_noop where raised):
    # the same English text stays in the log and in the JSON API's errors.
    response = render(request, "cabinet/signed_out.html", {"reason": reason}, status=status)
    response["Cache-Control"] = "no-store"
    return response


CabinetView = Callable[..., HttpResponse]


def cabinet_view(view: CabinetView) -> Callable[..., HttpResponse]:
    """Resolve the visit (401/403 page otherwise), check CSRF for a session's POST, render in the user's
    language; a framed answer may be framed by its portal only."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            return _refused(request, gettext_noop("method not allowed"), 405)
        try:
            visit = read_visit(request)
        except Rejected as exc:
            logger.info("cabinet visit refused", extra={"reason": exc.reason, "status": exc.status})
            return _refused(request, exc.reason, exc.status)
        if visit is None:
            return _refused(request, "", 401)
        if not visit.framed and request.method == "POST":
            refused = CsrfViewMiddleware(lambda r: HttpResponse()).process_view(request, view, args, kwargs)
            if refused is not None:
                return refused
        with translation.override(visit.principal.lang):
            response = view(request, visit, *args, **kwargs)
        response["Cache-Control"] = "no-store"
        if visit.framed:
            response["Referrer-Policy"] = "no-referrer"
            return frame_response(response, visit.portal.origin)
        return response

    # A framed POST carries its token instead (see the module docstring); a session POST is checked above.
    return csrf_exempt(wrapper)
