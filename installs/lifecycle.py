"""Install and app-event handling: prove what Bitrix24 sent, then call the `do_*` actions.

The order is always: parse and check (installs.intake) → prove the token (oauth.proofs: the OAuth server
and app.info are the only sources of truth; never a host outside the allow-list) → act. Nothing is stored
before the proof. Who may change a portal: an administrator of that portal (user.admin), with a token of
this application (app.info CODE), for that member_id (the OAuth server's answer to a refresh).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from b24portal.domains import domain_of_endpoint, is_allowed_domain
from b24portal.intake import TOKEN_RE, Rejected, text_field
from oauth import confirmation, proofs
from oauth.tokens import TokenGrant
from tenants.actions import do_change_domain
from tenants.models import InstallRun, Portal

from . import actions
from .intake import AppEvent, InstallRequest, install_from_event
from .tasks import verify_portal

logger = logging.getLogger(__name__)

METHOD_RE = re.compile(r"^[a-zA-Z0-9_.]{1,100}$")


@dataclass(frozen=True)
class AdminProof:
    """What the OAuth server and app.info say about an install or update token."""

    app_info: dict[str, Any]
    user: dict[str, Any]
    grant: TokenGrant | None  # the rotated pair (None when a reload reused a fresh proof: already stored)
    rest_endpoint: str


def prove_administrator(*, member_id: str, domain: str, rest_endpoint: str, grant: TokenGrant,
                        portal: Portal | None) -> AdminProof:
    """(a) the token is of THIS application (app.info through the trusted server endpoint, which costs the
    portal nothing), (b) of a portal ADMINISTRATOR (user.admin, one permit from the portal's proof budget),
    (c) of THAT member_id and domain (the OAuth server's answer to one refresh). Else `Rejected`."""
    token = grant.access_token
    earlier = proofs.proven_before(token)
    if earlier and earlier.get("member_id") == member_id and earlier.get("domain") == domain:
        return AdminProof(app_info=earlier["app_info"], user=earlier["user"], grant=None,
                          rest_endpoint=earlier["rest_endpoint"])
    with proofs.proving(token):
        app_info = proofs.app_info_from_server(token)
        proofs.take_proof_permit(domain, portal)
        user = proofs.user_and_admin(rest_endpoint, token)
        if not user.is_admin:
            raise proofs.ProofFailed("only a portal administrator can install or update the app")
        if not grant.refresh_token:
            raise proofs.ProofFailed("no refresh token: the OAuth server cannot confirm which portal this is")
        try:
            rotated, proven_member_id, client_endpoint = proofs.exchange_refresh_token(grant.refresh_token)
        except proofs.RefreshSpent:
            # The install frame and ONAPPINSTALL may carry the same pair, and whichever comes second finds
            # it spent. For a portal we already know on this very domain, the token's proof against that
            # domain (user.current + user.admin above) binds it to this member_id; keep the stored pair.
            if portal is None or portal.member_id != member_id or portal.domain != domain:
                raise
            return AdminProof(app_info=app_info, user=user.user, grant=None, rest_endpoint=portal.rest_endpoint)
        if proven_member_id != member_id:
            raise proofs.ProofFailed("the token belongs to another portal (member_id does not match)")
        proven_domain = domain_of_endpoint(client_endpoint) if client_endpoint else domain
        if proven_domain != domain or not is_allowed_domain(proven_domain):
            raise proofs.ProofFailed("the token belongs to a portal on another domain")
    # The OAuth server names the endpoint (https where the portal is https), whatever PROTOCOL said.
    endpoint = client_endpoint if client_endpoint else rest_endpoint
    proofs.remember_success(token, {"member_id": member_id, "domain": domain, "app_info": app_info,
                                    "user": user.user, "rest_endpoint": endpoint})
    return AdminProof(app_info=app_info, user=user.user, grant=rotated, rest_endpoint=endpoint)


def _refuse_downgrade(portal: Portal | None, rest_endpoint: str) -> None:
    if portal is not None and portal.rest_endpoint.startswith("https://") and not rest_endpoint.startswith("https://"):
        raise Rejected("the portal's REST endpoint is https; it is never downgraded to http", 403)


def handle_install(request: InstallRequest) -> InstallRun:
    # Webhook portals are never matched by anything Bitrix24 posts (their member_id cannot pass the intake
    # pattern either): an install or event only ever concerns an installed-app portal.
    existing = Portal.objects.filter(member_id=request.member_id, connection=Portal.Connection.APP).first()
    _refuse_downgrade(existing, request.rest_endpoint)
    if (existing is not None and existing.status in (Portal.Status.ACTIVE, Portal.Status.BLOCKED)
            and existing.application_token_hash and request.application_token
            and not existing.application_token_matches(request.application_token)):
        # Checked before any outbound call: an installed portal's token changes only through ONAPPUPDATE
        # or a reinstall after an uninstall.
        raise Rejected("this portal is installed; its application token changes only through an app update", 403)
    proof = prove_administrator(member_id=request.member_id, domain=request.domain,
                                rest_endpoint=request.rest_endpoint, grant=request.grant, portal=existing)
    _refuse_downgrade(existing, proof.rest_endpoint)
    if existing is not None and existing.domain != request.domain:
        # The OAuth server confirmed this member_id lives on the new domain: the portal was renamed.
        do_change_domain(existing, domain=request.domain, rest_endpoint=proof.rest_endpoint,
                         source="reinstall from the new address")
    return actions.do_begin_install(
        member_id=request.member_id, domain=request.domain, rest_endpoint=proof.rest_endpoint,
        app_info=proof.app_info, user=proof.user, grant=proof.grant, application_token=request.application_token,
        language=request.language,
        trigger=InstallRun.Trigger.EVENT if request.from_event else InstallRun.Trigger.FRAME,
    )


def _known_portal(event: AppEvent) -> Portal:
    portal = Portal.objects.filter(member_id=event.member_id, connection=Portal.Connection.APP).first()
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
        # The event brings a NEW application token, so it cannot match the stored one. Its tokens must prove
        # an administrator of this portal and this application, and its VERSION must be app.info's.
        if event.grant is None:
            raise Rejected("ONAPPUPDATE without an access token cannot be verified", 403)
        if not event.application_token:
            raise Rejected("ONAPPUPDATE without auth[application_token]")
        version = _int_or_none(event.data.get("VERSION"))
        if version is None:
            raise Rejected("ONAPPUPDATE without data[VERSION]")
        if portal.installed_version is not None and version < portal.installed_version:
            raise Rejected(f"version {version} is older than the installed {portal.installed_version}", 403)
        proof = prove_administrator(member_id=portal.member_id, domain=portal.domain,
                                    rest_endpoint=portal.rest_endpoint, grant=event.grant, portal=portal)
        if _int_or_none(proof.app_info.get("VERSION")) != version:
            raise Rejected("data[VERSION] does not match the version app.info reports", 403)
        update_run = actions.do_app_update(portal, application_token=event.application_token, version=version,
                                           app_info=proof.app_info, user=proof.user, grant=proof.grant)
        return {"portal": portal.member_id, "install_run": str(update_run.public_id) if update_run else None}
    if event.name == "ONAPPPAYMENT":
        portal = _known_portal(event)
        if event.application_token and not portal.application_token_matches(event.application_token):
            raise Rejected("application_token does not match", 403)
        # The event's own fields are not trusted: the payment state is read from app.info.
        if event.grant is not None:
            app_info = _server_app_info(event.grant.access_token)
        elif event.application_token:
            verify_portal.delay(portal.pk)
            return {"portal": portal.member_id, "verification": "queued"}
        else:
            raise Rejected("ONAPPPAYMENT without application_token or access token cannot be verified", 403)
        actions.do_apply_payment_event(portal, app_info=app_info)
        return {"portal": portal.member_id}
    if event.name == "ONAPPMETHODCONFIRM":
        portal = _known_portal(event)
        # Like ONAPPUNINSTALL, no tokens come with it: the stored application token is the proof.
        if not portal.application_token_matches(event.application_token):
            raise Rejected("application_token does not match", 403)
        method = text_field(event.data, "METHOD", pattern=METHOD_RE, max_length=100)
        confirmed = text_field(event.data, "CONFIRMED", max_length=1)
        if confirmed not in ("0", "1"):
            raise Rejected("data[CONFIRMED] must be 0 or 1")
        access_token = text_field(event.data, "TOKEN", required=False, pattern=TOKEN_RE) or None
        decided = confirmation.do_decide(portal, method=method, access_token=access_token,
                                         confirmed=confirmed == "1")
        return {"portal": portal.member_id, "method": method.lower(), "decided": decided}
    raise Rejected(f"unsupported event {event.name}", 400)


def _server_app_info(access_token: str) -> dict[str, Any]:
    with proofs.proving(access_token):
        return proofs.app_info_from_server(access_token)


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value).split(".", 1)[0])
    except (TypeError, ValueError):
        return None
