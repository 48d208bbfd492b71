"""Our provider accounts as Bitrix24 senders: `messageservice.sender.add/update/delete/list`.

Bitrix24 deletes an app's senders on every app update (CORE `onRestAppUpdate` calls `onRestAppDelete`),
so the same idempotent reconcile runs as an install step (install, update, staff re-run) and from a
periodic task: list what the portal has, add what is missing, update handlers that changed, delete codes
of ours that no active account uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from django.conf import settings
from django.utils import timezone

from installs.steps import StepFailed, install_step
from oauth.errors import B24Error
from oauth.periodic import Vanished, check_now, check_now_after_error

from .models import ProviderAccount

if TYPE_CHECKING:
    from oauth.client import PortalClient
    from tenants.models import Portal

#: the periodic check (tenants.schedule kind) that runs `reconcile_senders`
SENDERS_CHECK = "senders"

#: Bitrix24 answers that mean "already the way we want it"
ALREADY_THERE = "ERROR_SENDER_ALREADY_INSTALLED"
ALREADY_GONE = "ERROR_SENDER_NOT_FOUND"

#: Answers to our normal (non-reconcile) calls that mean a sender we registered is gone. Bitrix24 drops all
#: of an app's senders at once (app update), so one gone sender is a reason to reconcile them all now.
#: `messageservice.message.status.update` is not listed: CORE checks only the format of its CODE ("Wrong
#: sender code!" is a malformed code, which a reconcile cannot mend) and finds the message by its id alone
#: (ERROR_MESSAGE_NOT_FOUND: that message is gone, whatever became of its sender), so no push error says
#: anything about our sender.
VANISHED: Vanished = {
    ("messageservice.sender.delete", ALREADY_GONE): SENDERS_CHECK,
    ("messageservice.sender.update", ALREADY_GONE): SENDERS_CHECK,
}


def handler_url(portal: Portal) -> str:
    """The HANDLER Bitrix24 POSTs messages to; the unguessable key identifies the portal even when the
    payload has no `auth` block (messages without an author)."""
    return f"{settings.PUBLIC_URL}/b24/messageservice/{portal.handler_key}/"


def _add_params(account: ProviderAccount, handler: str) -> dict[str, str]:
    return {"CODE": account.code, "TYPE": "SMS", "HANDLER": handler, "NAME": account.name}


def _mark(account: ProviderAccount, *, state: str, error: str = "", code: str = "", handler: str = "") -> None:
    fields: dict[str, str | datetime] = {"registration_state": state, "registration_error": error[:500], "registered_code": code,
              "registered_handler": handler}
    if state == ProviderAccount.Registration.REGISTERED:
        fields["registered_at"] = timezone.now()
    ProviderAccount.objects.filter(pk=account.pk).update(**fields)
    for name, value in fields.items():
        setattr(account, name, value)


def sync_account_sender(account: ProviderAccount, client: PortalClient) -> str:
    """Bring one account's sender in line: add/update when active, delete when not; a renamed CODE
    deletes the old one. Raises B24Error (the caller decides on retries)."""
    portal = account.portal
    handler = handler_url(portal)
    believed_registered = (account.registration_state == ProviderAccount.Registration.REGISTERED
                           and account.registered_code == account.code)
    if account.registered_code and (account.registered_code != account.code or not account.is_active):
        try:
            client.call("messageservice.sender.delete", {"CODE": account.registered_code})
        except B24Error as exc:
            if exc.code != ALREADY_GONE:
                raise
            check_now_after_error(portal, VANISHED, "messageservice.sender.delete", exc)
        _mark(account, state=ProviderAccount.Registration.REMOVED)
    if not account.is_active:
        if account.registration_state != ProviderAccount.Registration.REMOVED:
            _mark(account, state=ProviderAccount.Registration.REMOVED)
        return f"sender {account.code} removed"
    try:
        client.call("messageservice.sender.add", _add_params(account, handler))
        action = "added"
        if believed_registered:  # Bitrix24 took an add of a sender we had registered: it had vanished
            check_now(portal, SENDERS_CHECK, f"sender {account.code} was missing from the portal")
    except B24Error as exc:
        if exc.code != ALREADY_THERE:
            _mark(account, state=ProviderAccount.Registration.FAILED, error=f"{exc.code}: {exc.description}",
                  code=account.registered_code)
            raise
        try:
            client.call("messageservice.sender.update",
                        {"CODE": account.code, "HANDLER": handler, "NAME": account.name})
        except B24Error as update_exc:
            check_now_after_error(portal, VANISHED, "messageservice.sender.update", update_exc)
            raise
        action = "updated"
    _mark(account, state=ProviderAccount.Registration.REGISTERED, code=account.code, handler=handler)
    return f"sender {account.code} {action}"


@dataclass
class SenderReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    skipped: bool = False

    def __str__(self) -> str:
        if self.skipped:
            return "no SMS provider accounts"
        parts = [f"{verb} {', '.join(codes)}" for verb, codes in
                 (("added", self.added), ("updated", self.updated), ("deleted", self.deleted)) if codes]
        return "; ".join(parts) if parts else "all senders in place"


def reconcile_senders(portal: Portal, client: PortalClient) -> SenderReport:
    """The idempotent reconcile. A portal that never had an account is not asked anything."""
    report = SenderReport()
    accounts = list(ProviderAccount.objects.filter(portal=portal).select_related("portal"))
    if not accounts:
        report.skipped = True
        return report
    listed = {str(code) for code in (client.call("messageservice.sender.list") or [])}
    handler = handler_url(portal)
    active = {a.code: a for a in accounts if a.is_active}
    commands: dict[str, tuple[str, dict[str, str]]] = {}
    for code, account in active.items():
        if code not in listed:
            commands[f"add_{code}"] = ("messageservice.sender.add", _add_params(account, handler))
        elif account.registered_handler != handler or account.registration_state != "registered":
            commands[f"update_{code}"] = ("messageservice.sender.update",
                                          {"CODE": code, "HANDLER": handler, "NAME": account.name})
    for code in sorted(listed - set(active)):
        commands[f"delete_{code}"] = ("messageservice.sender.delete", {"CODE": code})
    if not commands:
        return report
    batch = client.batch(commands)
    problems: list[str] = []
    for key in commands:
        verb, code = key.split("_", 1)
        error = batch.errors.get(key)
        if error is not None and error.code not in (ALREADY_THERE, ALREADY_GONE):
            problems.append(f"{verb} {code}: {error.code} {error.description}")
            if code in active:
                _mark(active[code], state=ProviderAccount.Registration.FAILED,
                      error=f"{error.code}: {error.description}")
            continue
        {"add": report.added, "update": report.updated, "delete": report.deleted}[verb].append(code)
        if verb == "delete":
            for account in accounts:
                if not account.is_active and code in (account.code, account.registered_code):
                    _mark(account, state=ProviderAccount.Registration.REMOVED)
        elif code in active:
            _mark(active[code], state=ProviderAccount.Registration.REGISTERED, code=code, handler=handler)
    if problems:
        retryable = [e for e in batch.errors.values() if e.retryable]
        if retryable:
            raise retryable[0]  # a rate limit inside the batch: let the caller retry the whole reconcile
        raise StepFailed("; ".join(problems))
    return report


def note_unknown_sender(portal: Portal, code: str) -> bool:
    """Bitrix24 POSTed a message for `code`, which is not an active sender of ours in this portal: the
    portal still has a sender we deleted or deactivated (our delete never reached it), so reconcile now.
    Call it only for a POST authenticated with the portal's application token: a forged one must not make
    us call Bitrix24."""
    return check_now(portal, SENDERS_CHECK, f"a message came for sender {code}, which is not active here")


@install_step("sms_senders", title="Register SMS senders", order=50)
def sms_senders_step(portal: Portal, client: PortalClient) -> str:
    return str(reconcile_senders(portal, client))
