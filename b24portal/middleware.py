"""Server-to-server endpoints without the browser middleware's work.

Bitrix24's server POSTs to a few endpoints (the messageservice HANDLER) that use no session, user,
messages, locale or CSRF token: the URL key and the signed auth block are the proof. A view marked with
`@server_to_server` is recognised by `ServerToServerMiddleware` (first in the stack after the security
middleware), which flags the request; the browser middlewares of settings.MIDDLEWARE are the subclasses
below, which pass a flagged request straight on. Everything else (the request log context with the key
redacted, Django's exception handling, any access-log middleware) runs as for every request.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages import middleware as messages_middleware
from django.contrib.sessions import middleware as sessions_middleware
from django.http import HttpRequest, HttpResponse
from django.middleware import csrf, locale
from django.urls import Resolver404, resolve

ViewFunc = TypeVar("ViewFunc", bound=Callable[..., HttpResponse])
FLAG = "_server_to_server"


def server_to_server(view: ViewFunc) -> ViewFunc:
    """Mark a view as called by servers only (no session, auth, messages, locale or CSRF middleware)."""
    view.server_to_server = True  # type: ignore[attr-defined]
    return view


class ServerToServerMiddleware:
    """Flags a POST whose URL resolves to a `@server_to_server` view."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.method == "POST":
            try:
                match = resolve(request.path_info)
            except Resolver404:
                pass
            else:
                if getattr(match.func, "server_to_server", False):
                    setattr(request, FLAG, True)
        return self.get_response(request)


class _SkipsServerToServer:
    """Mixed in before a Django middleware: a flagged request goes straight to the next layer (no
    process_request/process_response; CSRF's process_view already passes `csrf_exempt` views)."""

    def __call__(self, request: HttpRequest) -> HttpResponse:
        me: Any = self
        if getattr(request, FLAG, False):
            return me.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class SessionMiddleware(_SkipsServerToServer, sessions_middleware.SessionMiddleware):
    pass


class LocaleMiddleware(_SkipsServerToServer, locale.LocaleMiddleware):
    pass


class CsrfViewMiddleware(_SkipsServerToServer, csrf.CsrfViewMiddleware):
    pass


class AuthenticationMiddleware(_SkipsServerToServer, auth_middleware.AuthenticationMiddleware):
    pass


class MessageMiddleware(_SkipsServerToServer, messages_middleware.MessageMiddleware):
    pass
