"""Accepting messages: from Bitrix24's handler, from our widget, and staff's test SMS (through
`accounts.do_send_test_sms`). Each message is stored once per (portal, message_id) and its send is
dispatched on commit (`tasks.send_message`), except on the handler's PostgreSQL path, where the row is
stored as owed a dispatch and the SMS worker's outbox dispatcher publishes it (`outbox`). Accepted messages
are not journaled: the message row is its own record, and a busy portal sends thousands a day.
"""

from __future__ import annotations

import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from tenants.models import Portal, hash_application_token

from .models import Message, MessageCrmLink, ProviderAccount, as_bindings
from .outbox import NOTIFY_CHANNEL, dispatch_pending_sends
from .phones import InvalidPhoneNumber, normalize_phone
from .tasks import send_message

logger = logging.getLogger(__name__)

MAX_BODY_CHARS = 5000

# What accepting a message needs of its account: never the credentials (no decryption on the hot path).
ACCEPT_FIELDS = ("pk", "portal_id", "carrier", "code", "is_active")


def active_account_by_code(portal: Portal, code: str) -> ProviderAccount:
    return ProviderAccount.objects.only(*ACCEPT_FIELDS).get(portal=portal, code=code, is_active=True)


@dataclass(frozen=True, slots=True)
class HandlerTarget:
    """What the handler needs of the portal and the sender: a handful of columns, never the credentials."""

    account_id: int
    carrier: str
    portal_id: int
    member_id: str
    status: str
    application_token_hash: str

    @property
    def is_operational(self) -> bool:
        return self.status == Portal.Status.ACTIVE

    def application_token_matches(self, token: str | None) -> bool:
        if not token or not self.application_token_hash:
            return False
        return hmac.compare_digest(hash_application_token(token), self.application_token_hash)


_TARGET_SQL = ""


def handler_target(key: str, code: str) -> HandlerTarget:
    """The handler's one lookup: the active sender `code` of the portal whose handler key this is, with the
    few portal columns the handler checks, in one raw query (compiling the ORM join cost more than running
    it: perf-notes). Raises ProviderAccount.DoesNotExist."""
    global _TARGET_SQL
    if not _TARGET_SQL:
        _TARGET_SQL = (
            f"SELECT a.id, a.carrier, p.id, p.member_id, p.status, p.application_token_hash "  # noqa: S608 (table names from our models; values are parameters)
            f"FROM {ProviderAccount._meta.db_table} a JOIN {Portal._meta.db_table} p ON p.id = a.portal_id "
            f"WHERE p.handler_key = %s AND a.code = %s AND a.is_active")
    with connection.cursor() as cursor:
        cursor.execute(_TARGET_SQL, [key, code])
        row = cursor.fetchone()
    if row is None:
        raise ProviderAccount.DoesNotExist(f"no active sender {code!r} for this handler key")
    return HandlerTarget(*row)


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


_HANDLER_INSERT_SQL = ""
_HANDLER_FIELDS: list[Any] = []
_NOTIFY_SQL = "SELECT pg_notify(%s, '')"


def _handler_insert_sql() -> str:
    """One statement: the message row (ON CONFLICT on the idempotency key: a concurrent duplicate waits on
    the unique index and inserts nothing) and its CRM links from the same values, returning the new id."""
    global _HANDLER_INSERT_SQL
    if not _HANDLER_INSERT_SQL:
        fields = [f for f in Message._meta.concrete_fields if not f.primary_key]
        quote = connection.ops.quote_name
        links = MessageCrmLink._meta.db_table
        _HANDLER_INSERT_SQL = (
            f"WITH m AS (INSERT INTO {Message._meta.db_table} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608 (names from our models; values are parameters)
            f"VALUES ({', '.join(['%s'] * len(fields))}) ON CONFLICT (portal_id, message_id) DO NOTHING "
            f"RETURNING id), "
            f"l AS (INSERT INTO {links} (message_id, portal_id, owner_type_id, owner_id) "
            f"SELECT m.id, %s, x.t, x.o FROM m CROSS JOIN unnest(%s::bigint[], %s::bigint[]) AS x(t, o)) "
            f"SELECT id FROM m")
        _HANDLER_FIELDS[:] = fields
    return _HANDLER_INSERT_SQL


def accept_from_handler(target: HandlerTarget, *, code: str, message_id: str, to: str, body: str,
                        bindings: list[dict[str, Any]], author_user_id: int | None, origin: str,
                        meta: Mapping[str, Any]) -> tuple[int, str, bool]:
    """The handler's accept: (pk, state, created). Same contract as `accept` (stored once per
    (portal, message_id), committed before this returns, a broker that is down fails nothing) in one
    statement on PostgreSQL (and a NOTIFY): the INSERT of the message and its CRM links runs in autocommit, so it is durable
    when the statement returns, with no BEGIN/COMMIT round trips. Its send is not published here: the row
    is stored `dispatch_pending` and a NOTIFY wakes the SMS worker's outbox dispatcher
    (messageservice.outbox), which publishes it. In eager mode (tests) the outbox is drained right here."""
    message_id = message_id.lower()
    bindings = as_bindings(bindings)
    if connection.vendor != "postgresql":  # SQLite (make run): the ORM path, same contract
        portal = Portal.objects.get(pk=target.portal_id)
        account = ProviderAccount.objects.only(*ACCEPT_FIELDS).get(pk=target.account_id)
        message, created = accept(portal, account, message_id=message_id, to=to, body=body, bindings=bindings,
                                  author_user_id=author_user_id, origin=origin, meta=meta)
        return message.pk, message.state, created
    now = timezone.now()
    sql = _handler_insert_sql()
    row = Message(portal_id=target.portal_id, account_id=target.account_id, carrier=target.carrier,
                  message_id=message_id, origin=origin, recipient_raw=to[:64], body=body,
                  author_user_id=author_user_id, bindings=bindings, meta=dict(meta), created_at=now,
                  updated_at=now, next_attempt_at=now, dispatch_pending=True,
                  send_deadline_at=now + timedelta(minutes=settings.SMS_SEND_DEADLINE_MINUTES))
    params = [f.get_db_prep_save(getattr(row, f.attname), connection) for f in _HANDLER_FIELDS]
    params += [target.portal_id, [b["OWNER_TYPE_ID"] for b in bindings], [b["OWNER_ID"] for b in bindings]]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        inserted = cursor.fetchone()
        if inserted is not None:
            pk = int(inserted[0])
            if send_message.app.conf.task_always_eager:
                dispatch_pending_sends()  # eager: the worker's work runs here, through the same outbox
            else:
                # Wake the dispatcher in a statement of its own, not in the INSERT: a committing transaction
                # that notifies holds PostgreSQL's global notify lock through its WAL flush, so concurrent
                # handler commits would queue one fsync at a time (measured: about half the INSERT rate at 4
                # clients, a quarter at 8). This one writes nothing, so its commit does not wait for a flush.
                # Lost with a crash before it: the dispatcher's poll (SMS_DISPATCH_POLL_SECONDS) finds the row.
                cursor.execute(_NOTIFY_SQL, [NOTIFY_CHANNEL])
            return pk, Message.State.ACCEPTED, True
        stored_sql = (f"SELECT id, state, body, recipient_raw FROM {Message._meta.db_table} "  # noqa: S608 (our table)
                      "WHERE portal_id = %s AND message_id = %s")
        cursor.execute(stored_sql, [target.portal_id, message_id])
        pk, state, stored_body, stored_to = cursor.fetchone()
    if stored_body != body or stored_to != to[:64]:
        logger.warning("message_id repeated with different content; kept the first", extra={"message_id": message_id})
    return int(pk), str(state), False


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
