"""Accepting messages: from Bitrix24's handler, from our widget, and staff's test SMS (through
`accounts.do_send_test_sms`). Each message is stored once per (portal, message_id) and its send is
dispatched on commit (`tasks.send_message`). Accepted messages are not journaled: the message row is its
own record, and a busy portal sends thousands a day.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from tenants.models import Portal

from .models import Message, MessageCrmLink, ProviderAccount, as_bindings
from .phones import InvalidPhoneNumber, normalize_phone
from .tasks import send_message

logger = logging.getLogger(__name__)

MAX_BODY_CHARS = 5000

# What accepting a message needs of its account: never the credentials (no decryption on the hot path).
ACCEPT_FIELDS = ("pk", "portal_id", "carrier", "code", "is_active")


def active_account_by_code(portal: Portal, code: str) -> ProviderAccount:
    return ProviderAccount.objects.only(*ACCEPT_FIELDS).get(portal=portal, code=code, is_active=True)


def handler_target(key: str, code: str) -> ProviderAccount:
    """The handler's one lookup: the active sender `code` of the portal whose handler key this is, with its
    portal, in a single query. Raises ProviderAccount.DoesNotExist."""
    return (ProviderAccount.objects.select_related("portal")
            .only(*ACCEPT_FIELDS, *(f"portal__{f.name}" for f in Portal._meta.concrete_fields))
            .get(portal__handler_key=key, code=code, is_active=True))


def messages_for_crm_item(portal: Portal, owner_type_id: int, owner_id: int) -> QuerySet[Message]:
    """Messages bound to one CRM item, newest first (index sms_binding_item)."""
    ids = MessageCrmLink.objects.filter(portal=portal, owner_type_id=owner_type_id, owner_id=owner_id)
    return Message.objects.filter(portal=portal, pk__in=ids.values("message_id")).order_by("-created_at", "-id")


def messages_by_author(portal: Portal, user_id: int) -> QuerySet[Message]:
    return Message.objects.filter(portal=portal, author_user_id=user_id).order_by("-created_at", "-id")


def accept(portal: Portal, account: ProviderAccount, *, message_id: str, to: str, body: str,
           bindings: list[dict[str, int]], author_user_id: int | None, origin: str,
           meta: Mapping[str, Any], client_key: str = "") -> tuple[Message, bool]:
    """Store the message once per (portal, message_id) (and per (portal, client_key) for the widget) and
    dispatch its send on commit. A concurrent duplicate waits on the unique index, gets IntegrityError and
    returns the stored row instead. A broker that is down does not fail the call: the row is committed and
    `tasks.redispatch_lost_messages` dispatches it once the broker is back."""
    now = timezone.now()
    try:
        # One transaction, no inner savepoint: a duplicate rolls the whole attempt back (nothing else was
        # written yet) and the stored row is returned instead.
        with transaction.atomic():
            message = Message.objects.create(
                portal=portal, account=account, carrier=account.carrier, message_id=message_id,
                origin=origin, recipient_raw=to[:64], body=body, author_user_id=author_user_id,
                bindings=bindings, meta=dict(meta), client_key=client_key, created_at=now, next_attempt_at=now,
                send_deadline_at=now + timedelta(minutes=settings.SMS_SEND_DEADLINE_MINUTES),
            )
            if bindings:
                MessageCrmLink.objects.bulk_create(
                    MessageCrmLink(message=message, portal=portal, owner_type_id=b["OWNER_TYPE_ID"],
                                   owner_id=b["OWNER_ID"])
                    for b in bindings
                )
            pk = message.pk
            dispatch_on_commit(send_message, pk)
    except IntegrityError:
        existing = (widget_message_by_key(portal, client_key) if client_key else None) or Message.objects.get(
            portal=portal, message_id=message_id)
        if existing.body != body or existing.recipient_raw != to[:64]:
            logger.warning("message_id repeated with different content; kept the first",
                           extra={"message_id": message_id})
        return existing, False
    return message, True


def do_accept_message(portal: Portal, *, code: str, message_id: str, to: str, body: str,
                      bindings: list[dict[str, Any]], author_user_id: int | None, origin: str,
                      meta: Mapping[str, Any], account: ProviderAccount | None = None) -> tuple[Message, bool]:
    """The handler path. Raises ProviderAccount.DoesNotExist when `code` is not an active sender.
    `account` may be passed when the caller already loaded it (with `handler_target`)."""
    if account is None or account.portal_id != portal.pk or account.code != code:
        account = active_account_by_code(portal, code)
    return accept(portal, account, message_id=message_id.lower(), to=to, body=body,
                  bindings=as_bindings(bindings), author_user_id=author_user_id, origin=origin, meta=meta)


def check_outgoing(portal: Portal, account: ProviderAccount, to: str, body: str | None = None) -> str:
    errors: dict[str, list[str]] = {}
    if account.portal_id != portal.pk or not account.is_active:
        errors["account"] = ["not an active provider account of this portal"]
    e164 = ""
    try:
        e164 = normalize_phone(to, portal.phone_region or None)
    except InvalidPhoneNumber as exc:
        errors["to"] = [exc.reason]
    if body is not None and (not body.strip() or len(body) > MAX_BODY_CHARS):
        errors["body"] = [f"required, at most {MAX_BODY_CHARS} characters"]
    if errors:
        raise ValidationError(errors)
    return e164


def widget_message_by_key(portal: Portal, client_key: str) -> Message | None:
    """The widget message a submission with this key created, if any (constraint
    sms_message_client_key_per_portal)."""
    return Message.objects.filter(portal=portal, client_key=client_key).exclude(client_key="").first()


def do_send_from_widget(portal: Portal, *, account: ProviderAccount, to: str, body: str,
                        bindings: list[dict[str, Any]], user_id: int, client_key: str) -> tuple[Message, bool]:
    """A message a user writes in our widget: same queue as the handler's, with our own 32-hex id.
    Bitrix24 does not know it, so no status is pushed for it (`known_to_bitrix24` is False).

    `client_key` is generated by the frame page once per submission: the same key again (a second click, a
    retry after an error) returns the first message and `created` False, never a second SMS."""
    if not client_key:
        raise ValidationError({"client_key": ["required"]})
    existing = widget_message_by_key(portal, client_key)
    if existing is not None:
        return existing, False
    check_outgoing(portal, account, to, body)
    return accept(portal, account, message_id=secrets.token_hex(16), to=to.strip(), body=body,
                  bindings=as_bindings(bindings), author_user_id=user_id, origin=Message.Origin.WIDGET,
                  meta={"source": "widget"}, client_key=client_key)
