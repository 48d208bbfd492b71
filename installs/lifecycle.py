"""Install and app-event handling: prove what Bitrix24 sent, then call the `do_*` actions.

The order is always: parse and check (installs.intake) → prove the token against the portal itself
(never a host outside the allow-list) → act. Nothing is stored before the proof.
"""

from __future__ import annotations

import logging
from typing import Any

from b24portal.domains import domain_of_endpoint, is_allowed_domain
from b24portal.intake import Rejected
from oauth.client import post_method, probe_token
from oauth.errors import B24AuthError, B24Error, B24PortalMoved, B24TransportError
from tenants.actions import do_change_domain
from tenants.models import InstallRun, Portal

from . import actions
from .intake import AppEvent, InstallRequest, install_from_event
from .tasks import verify_portal

logger = logging.getLogger(__name__)


def prove_token(rest_endpoint: str, access_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """app.info + user.current with the token, against the portal's own endpoint."""
    try:
        app_info, user = probe_token(rest_endpoint, access_token)
    except B24AuthError as exc:
        raise Rejected(f"the portal rejected the token ({exc.code})", 403) from None
    except B24PortalMoved:
        raise Rejected("the portal answered with a redirect: it has moved; open the app from its new address",
                       409) from None
    except B24TransportError:
        raise Rejected("the portal could not be reached to verify the token; try again", 502) from None
    except B24Error as exc:
        raise Rejected(f"the portal refused verification ({exc.code})", 403) from None
    if "ID" not in app_info or not isinstance(app_info.get("INSTALLED", False), bool):
        raise Rejected("app.info answer is not an app's info", 403)
    return app_info, user


def _moved_to(old_endpoint: str, access_token: str) -> str | None:
    """Where the portal's old address redirects to (a renamed portal answers 302), if anywhere allowed."""
    try:
        response = post_method(old_endpoint, "app.info", {}, access_token, timeout=(5.0, 15.0))
    except B24Error:
        return None
    if not response.is_redirect:
        return None
    location = response.headers.get("Location", "")
    marker = location.lower().find("/rest/")
    domain = domain_of_endpoint(location[: marker + len("/rest/")]) if marker > 0 else None
    return domain if domain and is_allowed_domain(domain) else None


def handle_install(request: InstallRequest) -> InstallRun:
    app_info, user = prove_token(request.rest_endpoint, request.grant.access_token)
    existing = Portal.objects.filter(member_id=request.member_id).first()
    if existing is not None and existing.domain != request.domain:
        # app.info carries no member_id, so a token proves its domain, not the member_id it came with.
        # A different domain is accepted only when the portal's known address redirects there (a rename).
        if _moved_to(existing.rest_endpoint, request.grant.access_token) != request.domain:
            raise Rejected("this member_id belongs to a portal on another domain", 409)
        do_change_domain(existing, domain=request.domain, rest_endpoint=request.rest_endpoint,
                                 source="reinstall from the new address")
    return actions.do_begin_install(
        member_id=request.member_id, domain=request.domain, rest_endpoint=request.rest_endpoint,
        app_info=app_info, user=user, grant=request.grant, application_token=request.application_token,
        language=request.language,
        trigger=InstallRun.Trigger.EVENT if request.from_event else InstallRun.Trigger.FRAME,
    )


def _known_portal(event: AppEvent) -> Portal:
    portal = Portal.objects.filter(member_id=event.member_id).first()
    if portal is None:
        raise Rejected("unknown portal", 404)
    return portal


def handle_event(event: AppEvent) -> dict[str, Any]:
    if event.name == "ONAPPINSTALL":
        run = handle_install(install_from_event(event))
        return {"portal": event.member_id, "install_run": str(run.public_id)}
    if event.name == "ONAPPUNINSTALL":
        portal = _known_portal(event)
        # No tokens arrive with this event: the stored application token is the only proof.
        if not portal.application_token_matches(event.application_token):
            raise Rejected("application_token does not match", 403)
        clean = str(event.data.get("CLEAN", "0")).strip() == "1"
        actions.do_uninstall_portal(portal, clean=clean)
        return {"portal": portal.member_id, "status": "deleted", "clean": clean}
    if event.name == "ONAPPUPDATE":
        portal = _known_portal(event)
        # The event brings a NEW application token, so it cannot match the stored one. Its access token is
        # proven through app.info against the portal's known endpoint instead; then the new token is kept.
        if event.grant is None:
            raise Rejected("ONAPPUPDATE without an access token cannot be verified", 403)
        if not event.application_token:
            raise Rejected("ONAPPUPDATE without auth[application_token]")
        app_info, user = prove_token(portal.rest_endpoint, event.grant.access_token)
        version = _int_or_none(event.data.get("VERSION"))
        run = actions.do_app_update(portal, application_token=event.application_token, version=version,
                                    app_info=app_info, user=user, grant=event.grant)
        return {"portal": portal.member_id, "install_run": str(run.public_id) if run else None}
    if event.name == "ONAPPPAYMENT":
        portal = _known_portal(event)
        if event.application_token and not portal.application_token_matches(event.application_token):
            raise Rejected("application_token does not match", 403)
        # The event's own fields are not trusted: the payment state is read from app.info.
        if event.grant is not None:
            app_info, _user = prove_token(portal.rest_endpoint, event.grant.access_token)
        elif event.application_token:
            verify_portal.delay(portal.pk)
            return {"portal": portal.member_id, "verification": "queued"}
        else:
            raise Rejected("ONAPPPAYMENT without application_token or access token cannot be verified", 403)
        actions.do_apply_payment_event(portal, app_info=app_info)
        return {"portal": portal.member_id}
    raise Rejected(f"unsupported event {event.name}", 400)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value).split(".", 1)[0])
    except (TypeError, ValueError):
        return None
