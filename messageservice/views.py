"""The messageservice HANDLER endpoint: Bitrix24 POSTs each SMS here. Thin: parse, prove, store, answer.

Bitrix24 never redelivers a failed POST, so the message is stored before we answer, and the answer comes
at once (200, JSON); the carrier is called by a Celery task dispatched on commit.
"""

from __future__ import annotations

import hmac
import logging

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from b24portal import intake as form_intake
from b24portal.intake import Rejected, rejects_bad_input
from b24portal.logging import bind_log_context
from b24portal.middleware import server_to_server
from tenants.models import Portal

from . import senders, sending
from .intake import HANDLER_KEY_RE, parse_handler_payload
from .models import ProviderAccount

logger = logging.getLogger(__name__)


def portal_for_key(key: str) -> Portal:
    """The portal whose handler URL this is. The key is a unique, indexed, unguessable value: looking it
    up by equality reveals nothing about other keys."""
    if not HANDLER_KEY_RE.match(key):
        raise Rejected("unknown handler", 404)
    portal = Portal.objects.filter(handler_key=key).first()
    if portal is None:
        raise Rejected("unknown handler", 404)
    return portal


def _same_member(auth: dict[str, str], member_id: str) -> bool:
    return hmac.compare_digest(auth["member_id"].encode(), member_id.encode())


@server_to_server  # no session/auth/messages/locale/CSRF middleware work on this path
@csrf_exempt  # Bitrix24's server POSTs here; the URL key (and the auth block, when present) is the proof
@require_POST
@rejects_bad_input
def handler(request: HttpRequest, key: str) -> HttpResponse:
    form = form_intake.read_form(request)
    if not HANDLER_KEY_RE.match(key):
        raise Rejected("unknown handler", 404)
    incoming = parse_handler_payload(form_intake.nested(form))
    try:
        target = sending.handler_target(key, incoming.code)  # portal and sender columns in one raw query
    except ProviderAccount.DoesNotExist:
        portal = portal_for_key(key)  # 404 "unknown handler" when the key itself is wrong
        # Only a POST signed with the portal's stored application token may make us ask Bitrix24 anything.
        if (portal.is_operational and incoming.auth is not None and _same_member(incoming.auth, portal.member_id)
                and portal.application_token_matches(incoming.auth["application_token"])):
            senders.note_unknown_sender(portal, incoming.code)  # it keeps a sender we removed
        raise Rejected(f"unknown sender code {incoming.code!r}", 404) from None
    bind_log_context(member_id=target.member_id)
    if not target.is_operational:
        raise Rejected(f"portal is not active ({target.status})", 409)
    if incoming.auth is not None:
        same_member = _same_member(incoming.auth, target.member_id)
        # A portal installed from an older install frame (no APPLICATION_TOKEN) and without ONAPPINSTALL has
        # no token to compare yet: the unguessable URL key is the proof then, and a message Bitrix24 will
        # never redeliver is not refused for our missing data.
        token_ok = (not target.application_token_hash
                    or target.application_token_matches(incoming.auth["application_token"]))
        if not (same_member and token_ok):
            raise Rejected("auth does not match this portal", 403)
    _pk, state, created = sending.accept_from_handler(
        target, code=incoming.code, message_id=incoming.message_id, to=incoming.to, body=incoming.body,
        bindings=incoming.bindings, author_user_id=incoming.author_user_id, origin=incoming.origin,
        meta=incoming.meta)
    return JsonResponse({"ok": True, "message_id": incoming.message_id, "state": state, "duplicate": not created})
