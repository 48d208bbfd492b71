"""Provider accounts: a portal's credentials at one carrier, registered in its Bitrix24 as one sender.

Validation, create / update / deactivate (the Bitrix24 sender follows on commit through
`tasks.sync_sender`), and staff's test SMS. Account changes are journaled.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from installs.webhooks import AppContextRequired, refuse_app_only
from tenants.journal import Actor, journal
from tenants.models import JournalEntry, Portal

from .carriers import CARRIERS, carrier_class
from .models import SENDER_CODE_RE, Message, ProviderAccount
from .phones import mask_phone
from .sending import accept, check_outgoing
from .tasks import sync_sender

ACCOUNT_FIELDS = ("carrier", "code", "name", "sender", "base_url", "credentials", "options", "is_active")
#: changes of these fields must reach Bitrix24 (sender.add / update / delete)
SENDER_FIELDS = ("code", "name", "is_active")


def accounts_for(portal: Portal, *, active_only: bool = True) -> QuerySet[ProviderAccount]:
    queryset = ProviderAccount.objects.filter(portal=portal)
    return queryset.filter(is_active=True) if active_only else queryset


def get_account(portal: Portal, account_id: int) -> ProviderAccount:
    """Raises ProviderAccount.DoesNotExist for an id of another portal."""
    return ProviderAccount.objects.get(portal=portal, pk=account_id)


def clean_account_data(portal: Portal, data: Mapping[str, Any], account: ProviderAccount | None = None
                       ) -> dict[str, Any]:
    """Validate `data` (a partial update when `account` is given) and return the full field values.

    Credentials: on an update with the same carrier, a blank credential value keeps the stored one, so
    forms never have to show secrets back. Raises ValidationError({field: [messages]})."""
    try:
        refuse_app_only(portal, "an SMS provider (messageservice)")
    except AppContextRequired as exc:
        raise ValidationError({"portal": [exc.reason]}) from None
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
    if carrier in CARRIERS:  # an unknown carrier is reported above; its options mean nothing
        try:
            values["options"] = carrier_class(carrier).validate_options(values["options"])
        except ValidationError as exc:
            errors["options"] = exc.messages
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


def _kind(actor: Actor) -> str:
    """Staff changes are staff entries; the portal's own (its administrator in the widget) are SMS-account ones."""
    return JournalEntry.Kind.STAFF if actor.is_staff else JournalEntry.Kind.SMS_ACCOUNT


def do_save_account(portal: Portal, *, data: dict[str, Any], account: ProviderAccount | None = None,
                    actor: Actor) -> ProviderAccount:
    """Create or update a provider account; its Bitrix24 sender follows on commit."""
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
        journal(portal, _kind(actor),
                f"SMS provider account {account.code} ({account.carrier}) "
                f"{'created' if created else 'updated'}",
                actor=actor, details={"account": account.pk,
                                      "changed": [c if c != "credentials" else "credentials (hidden)"
                                                  for c in changed]})
        if any(name in changed for name in SENDER_FIELDS) or account.registration_state != "registered":
            account_id = account.pk
            dispatch_on_commit(sync_sender, account_id)
    return account


def do_deactivate_account(portal: Portal, account: ProviderAccount, *, actor: Actor) -> None:
    """Stop using the account; its sender is deleted from Bitrix24 on commit. Messages already accepted
    for it still go out (they were accepted)."""
    with transaction.atomic():
        updated = ProviderAccount.objects.filter(pk=account.pk, portal=portal, is_active=True).update(
            is_active=False, updated_at=timezone.now())
        account.is_active = False
        if not updated:
            return
        journal(portal, _kind(actor),
                f"SMS provider account {account.code} deactivated", actor=actor, details={"account": account.pk})
        account_id = account.pk
        dispatch_on_commit(sync_sender, account_id)


def do_send_test_sms(portal: Portal, account: ProviderAccount, *, to: str, actor: Actor) -> Message:
    """Staff's "send test SMS": goes through the real queue and carrier. Raises ValidationError for an
    unusable number or account."""
    e164 = check_outgoing(portal, account, to)
    body = f"Test message from {portal.domain} via {account.name}"
    with transaction.atomic():
        message, _created = accept(portal, account, message_id=secrets.token_hex(16), to=e164, body=body,
                                   bindings=[], author_user_id=None, origin=Message.Origin.TEST,
                                   meta={"actor": str(actor)})
        journal(portal, JournalEntry.Kind.STAFF, f"test SMS to {mask_phone(e164)} via {account.code} queued",
                actor=actor, details={"message": message.pk, "account": account.pk})
    return message


def describe_test_result(message: Message) -> tuple[str, bool]:
    """What the carrier answered to a (test) message, in words, and whether that answer is final (False:
    still queued or waiting to retry; ask again later)."""
    label = dict(CARRIERS).get(message.carrier, (message.carrier, ""))[0]
    said = f" The carrier said: “{message.carrier_status}”." if message.carrier_status else ""
    if message.state == Message.State.FAILED:
        return f"{label} refused the message: {message.last_error or 'no reason given'}.", True
    if message.state == Message.State.NEEDS_REVIEW:
        return (f"Unknown whether {label} accepted the message ({message.last_error or 'no answer'}); check with "
                "the carrier before sending again.", True)
    if message.state == Message.State.CANCELLED:
        return "The message was cancelled before it was sent.", True
    if message.state == Message.State.HANDED_TO_CARRIER:
        status = message.get_status_display().lower() if message.status else "no status yet"
        cost = f" Cost: {message.cost}." if message.cost else ""
        return f"{label} accepted the message (delivery status: {status}).{said}{cost}", True
    if message.last_error:
        return f"Not sent yet: {message.last_error}. It will be tried again.", False
    return f"Queued; waiting for {label}'s answer.", False
