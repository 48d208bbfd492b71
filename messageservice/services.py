"""The SMS app's service API: tenant-scoped getters and `do_*` mutations.

Shared by the handler view, the admin and the in-Bitrix24 settings page. Every mutation runs in
`transaction.atomic()`, and dispatches Celery work (send, sender sync) only on commit. Staff and
account changes are journaled; accepted messages are not (the message row is its own record, and a busy
portal sends thousands a day).
"""

from __future__ import annotations

import logging
import numbers
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from tenants.actions import journal
from tenants.models import JournalEntry, Portal

from . import conf
from .carriers import CARRIERS, carrier_class
from .models import SENDER_CODE_RE, Message, MessageBinding, ProviderAccount, as_bindings
from .phones import InvalidPhoneNumber, mask_phone, normalize_phone
from .status import DeliveryStatus

logger = logging.getLogger(__name__)

State = Message.State
ACCOUNT_FIELDS = ("carrier", "code", "name", "sender", "base_url", "credentials", "options", "is_active")
#: changes of these fields must reach Bitrix24 (sender.add / update / delete)
SENDER_FIELDS = ("code", "name", "is_active")
MAX_BODY_CHARS = 5000

# -- getters --------------------------------------------------------------------------------------------


def accounts_for(portal: Portal, *, active_only: bool = True) -> QuerySet[ProviderAccount]:
    queryset = ProviderAccount.objects.filter(portal=portal)
    return queryset.filter(is_active=True) if active_only else queryset


def get_account(portal: Portal, account_id: int) -> ProviderAccount:
    """Raises ProviderAccount.DoesNotExist for an id of another portal."""
    return ProviderAccount.objects.get(portal=portal, pk=account_id)


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


def messages_for_binding(portal: Portal, owner_type_id: int, owner_id: int) -> QuerySet[Message]:
    """Messages bound to one CRM item, newest first (index sms_binding_item)."""
    ids = MessageBinding.objects.filter(portal=portal, owner_type_id=owner_type_id, owner_id=owner_id)
    return Message.objects.filter(portal=portal, pk__in=ids.values("message_id")).order_by("-created_at", "-id")


def messages_by_author(portal: Portal, user_id: int) -> QuerySet[Message]:
    return Message.objects.filter(portal=portal, author_user_id=user_id).order_by("-created_at", "-id")


# -- provider accounts ----------------------------------------------------------------------------------


def _check_options(carrier: str, options: Any) -> list[str]:
    if not isinstance(options, Mapping):
        return ["must be a JSON object"]
    problems: list[str] = []
    ranges = {"delivery_delay": (0.0, 86400.0), "failure_rate": (0.0, 1.0)}
    for key, (low, high) in ranges.items():
        if key in options:
            value = options[key]
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= value <= high:
                problems.append(f"{key} must be a number from {low:g} to {high:g}")
    if "timeout" in options:
        value = options["timeout"]
        ok = (isinstance(value, numbers.Real) and not isinstance(value, bool) and value > 0) or (
            isinstance(value, list) and len(value) == 2 and all(isinstance(v, numbers.Real) and v > 0 for v in value))
        if not ok:
            problems.append("timeout must be seconds or [connect, read]")
    return problems


def clean_account_data(portal: Portal, data: Mapping[str, Any], account: ProviderAccount | None = None
                       ) -> dict[str, Any]:
    """Validate `data` (a partial update when `account` is given) and return the full field values.

    Credentials: on an update with the same carrier, a blank credential value keeps the stored one, so
    forms never have to show secrets back. Raises ValidationError({field: [messages]})."""
    unknown = set(data) - set(ACCOUNT_FIELDS)
    if unknown:
        raise ValidationError({name: ["unknown field"] for name in sorted(unknown)})
    values: dict[str, Any] = {name: getattr(account, name) for name in ACCOUNT_FIELDS} if account else {
        "carrier": "", "code": "", "name": "", "sender": "", "base_url": "", "credentials": {}, "options": {},
        "is_active": True}
    for name in ACCOUNT_FIELDS:
        if name in data and name != "credentials":
            values[name] = data[name]
    errors: dict[str, list[str]] = {}

    carrier = str(values["carrier"] or "")
    if carrier not in CARRIERS:
        errors["carrier"] = [f"choose one of: {', '.join(CARRIERS)}"]
    code = str(values["code"] or "").strip()
    values["code"] = code
    if not SENDER_CODE_RE.match(code):
        errors["code"] = ["1-50 characters from a-z A-Z 0-9 . - _"]
    else:
        taken = ProviderAccount.objects.filter(portal=portal, code=code)
        if account is not None:
            taken = taken.exclude(pk=account.pk)
        if taken.exists():
            errors["code"] = ["another provider account of this portal uses this code"]
    values["name"] = str(values["name"] or "").strip()
    if not values["name"] or len(values["name"]) > 100:
        errors["name"] = ["required, at most 100 characters"]
    values["sender"] = str(values["sender"] or "").strip()
    if len(values["sender"]) > 64:
        errors["sender"] = ["at most 64 characters"]
    values["base_url"] = str(values["base_url"] or "").strip()
    if values["base_url"]:
        try:
            URLValidator(schemes=["http", "https"])(values["base_url"])
        except ValidationError:
            errors["base_url"] = ["must be an absolute http(s) URL"]
    values["options"] = values["options"] if values["options"] is not None else {}
    if problems := _check_options(carrier, values["options"]):
        errors["options"] = problems
    values["is_active"] = bool(values["is_active"])

    credentials: Any = data.get("credentials", None if account else {})
    if credentials is None:
        credentials = dict(account.credentials) if account else {}
    if not isinstance(credentials, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str | None) for k, v in credentials.items()):
        errors["credentials"] = ["must be an object of text values"]
    else:
        merged = {k: str(v).strip() for k, v in credentials.items() if v is not None}
        if account is not None and account.carrier == carrier:
            merged = {**account.credentials, **{k: v for k, v in merged.items() if v}}
        values["credentials"] = {k: v for k, v in merged.items() if v}
        if carrier in CARRIERS and (problems := carrier_class(carrier).check_credentials(values["credentials"])):
            errors["credentials"] = problems
    if errors:
        raise ValidationError(errors)
    return values


def do_save_account(portal: Portal, *, data: dict[str, Any], account: ProviderAccount | None = None,
                    actor: str) -> ProviderAccount:
    """Create or update a provider account; its Bitrix24 sender follows on commit."""
    from .tasks import sync_sender

    if account is not None:
        # the stored state, not an in-memory copy a form may already have changed
        account = ProviderAccount.objects.get(pk=account.pk, portal=portal)
    values = clean_account_data(portal, data, account)
    created = account is None
    with transaction.atomic():
        if account is None:
            account = ProviderAccount(portal=portal)
            changed = list(ACCOUNT_FIELDS)
        else:
            account = ProviderAccount.objects.select_for_update().get(pk=account.pk, portal=portal)
            changed = [name for name in ACCOUNT_FIELDS if getattr(account, name) != values[name]]
        for name, value in values.items():
            setattr(account, name, value)
        try:
            with transaction.atomic():
                account.save()
        except IntegrityError:  # a concurrent save took the code between the check and the insert
            raise ValidationError({"code": ["another provider account of this portal uses this code"]}) from None
        journal(portal, JournalEntry.Kind.STAFF if actor.startswith("staff:") else JournalEntry.Kind.BINDING,
                f"SMS provider account {account.code} ({account.carrier}) "
                f"{'created' if created else 'updated'}",
                actor=actor, details={"account": account.pk,
                                      "changed": [c if c != "credentials" else "credentials (hidden)"
                                                  for c in changed]})
        if any(name in changed for name in SENDER_FIELDS) or account.registration_state != "registered":
            account_id = account.pk
            transaction.on_commit(lambda: sync_sender.delay(account_id))
    return account


def do_deactivate_account(portal: Portal, account: ProviderAccount, *, actor: str) -> None:
    """Stop using the account; its sender is deleted from Bitrix24 on commit. Messages already accepted
    for it still go out (they were accepted)."""
    from .tasks import sync_sender

    with transaction.atomic():
        updated = ProviderAccount.objects.filter(pk=account.pk, portal=portal, is_active=True).update(
            is_active=False, updated_at=timezone.now())
        account.is_active = False
        if not updated:
            return
        journal(portal, JournalEntry.Kind.STAFF if actor.startswith("staff:") else JournalEntry.Kind.BINDING,
                f"SMS provider account {account.code} deactivated", actor=actor, details={"account": account.pk})
        account_id = account.pk
        transaction.on_commit(lambda: sync_sender.delay(account_id))


# -- accepting messages ---------------------------------------------------------------------------------


def _accept(portal: Portal, account: ProviderAccount, *, message_id: str, to: str, body: str,
            bindings: list[dict[str, int]], author_user_id: int | None, origin: str,
            meta: Mapping[str, Any]) -> tuple[Message, bool]:
    """Store the message once per (portal, message_id) and dispatch its send on commit. A concurrent
    duplicate waits on the unique index, gets IntegrityError and returns the stored row instead."""
    from .tasks import send_message

    now = timezone.now()
    try:
        # One transaction, no inner savepoint: a duplicate rolls the whole attempt back (nothing else was
        # written yet) and the stored row is returned instead.
        with transaction.atomic():
            message = Message.objects.create(
                portal=portal, account=account, carrier=account.carrier, message_id=message_id,
                origin=origin, recipient_raw=to[:64], body=body, author_user_id=author_user_id,
                bindings=bindings, meta=dict(meta), created_at=now, next_attempt_at=now,
                send_deadline_at=now + timedelta(minutes=conf.get("SMS_SEND_DEADLINE_MINUTES")),
            )
            if bindings:
                MessageBinding.objects.bulk_create(
                    MessageBinding(message=message, portal=portal, owner_type_id=b["OWNER_TYPE_ID"],
                                   owner_id=b["OWNER_ID"])
                    for b in bindings
                )
            pk = message.pk
            transaction.on_commit(lambda: send_message.delay(pk))
    except IntegrityError:
        existing = Message.objects.get(portal=portal, message_id=message_id)
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
    return _accept(portal, account, message_id=message_id.lower(), to=to, body=body,
                   bindings=as_bindings(bindings), author_user_id=author_user_id, origin=origin, meta=meta)


def _check_outgoing(portal: Portal, account: ProviderAccount, to: str, body: str | None = None) -> str:
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


def do_send_from_widget(portal: Portal, *, account: ProviderAccount, to: str, body: str,
                        bindings: list[dict[str, Any]], user_id: int) -> Message:
    """A message a user writes in our widget: same queue as the handler's, with our own 32-hex id.
    Bitrix24 does not know it, so no status is pushed for it (`known_to_bitrix24` is False)."""
    _check_outgoing(portal, account, to, body)
    message, _created = _accept(portal, account, message_id=secrets.token_hex(16), to=to.strip(), body=body,
                                bindings=as_bindings(bindings), author_user_id=user_id,
                                origin=Message.Origin.WIDGET, meta={"source": "widget"})
    return message


def do_send_test_sms(portal: Portal, account: ProviderAccount, *, to: str, actor: str) -> Message:
    """Staff's "send test SMS": goes through the real queue and carrier. Raises ValidationError for an
    unusable number or account."""
    e164 = _check_outgoing(portal, account, to)
    body = f"Test message from {portal.domain} via {account.name}"
    with transaction.atomic():
        message, _created = _accept(portal, account, message_id=secrets.token_hex(16), to=e164, body=body,
                                    bindings=[], author_user_id=None, origin=Message.Origin.TEST,
                                    meta={"actor": actor})
        journal(portal, JournalEntry.Kind.STAFF, f"test SMS to {mask_phone(e164)} via {account.code} queued",
                actor=actor, details={"message": message.pk, "account": account.pk})
    return message


# -- staff actions on messages --------------------------------------------------------------------------


def do_repush_status(message: Message, *, actor: str) -> bool:
    """Send the current status to Bitrix24 again (e.g. after a portal restored a deleted message). Only
    messages Bitrix24 knows and that have a status; the pusher then treats it as never pushed."""
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, origin__in=Message.BITRIX24_ORIGINS,
                                         status__isnull=False).update(pushed_status="", push_due=True,
                                                                      push_attempts=0)
        if updated:
            journal(message.portal, JournalEntry.Kind.STAFF, f"SMS {message.message_id}: status re-push queued",
                    actor=actor, details={"message": message.pk, "status": message.status})
    return bool(updated)



def do_retry_message(message: Message, *, actor: str) -> bool:
    """Send a failed or needs-review message again (a human decided it was not sent). The delivery
    status starts over, so Bitrix24 will hear the new outcome even after an earlier `failed`."""
    from .tasks import send_message

    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, state__in=[State.FAILED, State.NEEDS_REVIEW]).update(
            state=State.ACCEPTED, claimed_at=None, next_attempt_at=now, last_error="", status=None,
            carrier_status="", carrier_message_id="", final_at=None, next_poll_at=None, push_due=False,
            pushed_status="", status_changed_at=now, updated_at=now,
            send_deadline_at=now + timedelta(minutes=conf.get("SMS_SEND_DEADLINE_MINUTES")))
        if not updated:
            return False
        journal(message.portal, JournalEntry.Kind.STAFF, f"SMS {message.message_id}: send retried", actor=actor,
                details={"message": message.pk, "previous_state": message.state})
        pk = message.pk
        transaction.on_commit(lambda: send_message.delay(pk))
    return True


def _finish(message: Message, *, from_states: list[str], state: str, status: DeliveryStatus | None,
            reason: str, actor: str) -> bool:
    now = timezone.now()
    with transaction.atomic():
        updated = Message.objects.filter(pk=message.pk, state__in=from_states).update(
            state=state, claimed_at=None, last_error=reason[:500], updated_at=now,
            **({"next_poll_at": now} if state == State.SENT and message.carrier_message_id else {}))
        if not updated:
            return False
        if status is not None:
            message.advance_status(status, error=reason, now=now)
        journal(message.portal, JournalEntry.Kind.STAFF, f"SMS {message.message_id}: {reason}", actor=actor,
                details={"message": message.pk, "previous_state": message.state, "state": state})
    return True


def do_mark_sent(message: Message, *, actor: str) -> bool:
    """Needs review → a human checked with the carrier that it went out."""
    return _finish(message, from_states=[State.NEEDS_REVIEW], state=State.SENT, status=DeliveryStatus.SENT,
                   reason="marked as sent by support", actor=actor)


def do_mark_failed(message: Message, *, actor: str, reason: str = "marked as failed by support") -> bool:
    return _finish(message, from_states=[State.NEEDS_REVIEW], state=State.FAILED, status=DeliveryStatus.FAILED,
                   reason=reason, actor=actor)


def do_cancel_message(message: Message, *, actor: str) -> bool:
    """Only before the carrier has it (accepted or waiting to retry); Bitrix24 hears `failed`."""
    return _finish(message, from_states=[State.ACCEPTED, State.RETRYING], state=State.CANCELLED,
                   status=DeliveryStatus.FAILED, reason="cancelled by support", actor=actor)
