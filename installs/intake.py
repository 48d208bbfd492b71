"""Parsing and checking what Bitrix24 POSTs to us (install frame, app events), before anything is stored.

Everything here is untrusted input. Each problem raises `Rejected(reason, status)`, which the views turn
into a 4xx with that reason. No function here makes a network call: proving tokens is the caller's job,
and only after the domain passed the allow-list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.http import QueryDict

from b24portal.domains import domain_of_endpoint, rest_endpoint_for
from b24portal.intake import EVENT_RE, LANG_RE, MEMBER_ID_RE, TOKEN_RE, Rejected, checked_domain, text_field
from oauth.tokens import TokenGrant


def _expires(value: str) -> int:
    try:
        seconds = int(value or 3600)
    except ValueError:
        raise Rejected("token lifetime is not a number") from None
    if not 0 < seconds <= 86400 * 2:
        raise Rejected("token lifetime is out of range")
    return seconds


@dataclass(frozen=True)
class InstallRequest:
    """An install, from either the UI install frame or the ONAPPINSTALL event."""

    member_id: str
    domain: str
    rest_endpoint: str
    grant: TokenGrant
    application_token: str | None
    language: str
    from_event: bool


def parse_install_frame(query: QueryDict, form: QueryDict) -> InstallRequest:
    """Query: DOMAIN, PROTOCOL, LANG, APP_SID. Body: AUTH_ID, AUTH_EXPIRES, REFRESH_ID, member_id, status
    and, in newer portals, APPLICATION_TOKEN, APPLICATION_SCOPE, SERVER_ENDPOINT, PLACEMENT."""
    domain = checked_domain(text_field(query, "DOMAIN") or text_field(form, "DOMAIN"))
    protocol = query.get("PROTOCOL", form.get("PROTOCOL", "1"))
    if protocol not in ("0", "1"):
        raise Rejected("PROTOCOL must be 0 or 1")
    grant = TokenGrant(
        access_token=text_field(form, "AUTH_ID", pattern=TOKEN_RE),
        refresh_token=text_field(form, "REFRESH_ID", pattern=TOKEN_RE),
        expires_in=_expires(text_field(form, "AUTH_EXPIRES", required=False, max_length=10)),
        scope=text_field(form, "APPLICATION_SCOPE", required=False, max_length=1000),
    )
    return InstallRequest(
        member_id=text_field(form, "member_id", pattern=MEMBER_ID_RE),
        domain=domain,
        rest_endpoint=rest_endpoint_for(domain, https=protocol == "1"),
        grant=grant,
        application_token=text_field(form, "APPLICATION_TOKEN", required=False, pattern=TOKEN_RE) or None,
        language=text_field(query, "LANG", required=False, pattern=LANG_RE, max_length=10) or "en",
        from_event=False,
    )


@dataclass(frozen=True)
class AppEvent:
    name: str
    data: dict[str, Any]
    member_id: str
    domain: str
    rest_endpoint: str
    application_token: str | None
    grant: TokenGrant | None


def parse_event(payload: dict[str, Any]) -> AppEvent:
    """`event`, `data[...]`, `ts`, `auth[...]` (tokens only when the event carries them)."""
    name = text_field(payload, "event", pattern=EVENT_RE, max_length=64).upper()
    auth = payload.get("auth")
    if not isinstance(auth, dict):
        raise Rejected("missing auth block")
    data = payload.get("data", {})
    if data in ("", None):
        data = {}
    if not isinstance(data, dict):
        raise Rejected("data must be a nested form block")
    member_id = text_field(auth, "member_id", pattern=MEMBER_ID_RE)
    client_endpoint = text_field(auth, "client_endpoint", required=False, max_length=300)
    if client_endpoint:
        domain = domain_of_endpoint(client_endpoint)
        if domain is None:
            raise Rejected("auth[client_endpoint] is not a portal REST endpoint")
        checked_domain(domain)
        rest_endpoint = client_endpoint if client_endpoint.endswith("/") else client_endpoint + "/"
    else:
        domain = checked_domain(text_field(auth, "domain"))
        rest_endpoint = rest_endpoint_for(domain, https=True)
    access_token = text_field(auth, "access_token", required=False, pattern=TOKEN_RE)
    grant = None
    if access_token:
        grant = TokenGrant(
            access_token=access_token,
            refresh_token=text_field(auth, "refresh_token", required=False, pattern=TOKEN_RE),
            expires_in=_expires(text_field(auth, "expires_in", required=False, max_length=10)),
            scope=text_field(auth, "scope", required=False, max_length=1000),
        )
    return AppEvent(
        name=name, data=data, member_id=member_id, domain=domain, rest_endpoint=rest_endpoint,
        application_token=text_field(auth, "application_token", required=False, pattern=TOKEN_RE) or None,
        grant=grant,
    )


def install_from_event(event: AppEvent) -> InstallRequest:
    if event.grant is None or not event.grant.refresh_token:
        raise Rejected("ONAPPINSTALL without access and refresh tokens")
    if not event.application_token:
        raise Rejected("ONAPPINSTALL without auth[application_token]")
    given = event.data.get("LANGUAGE_ID")
    language = given if isinstance(given, str) else "en"
    return InstallRequest(
        member_id=event.member_id, domain=event.domain, rest_endpoint=event.rest_endpoint, grant=event.grant,
        application_token=event.application_token,
        language=language if LANG_RE.match(language or "") else "en", from_event=True,
    )
