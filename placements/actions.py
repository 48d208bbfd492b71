"""Staff and system actions on bindings (`do_*`): talk to the portal, then record and journal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.periodic import check_now, check_now_after_error
from tenants.journal import Actor, journal
from tenants.models import JournalEntry

from . import bindings, config
from .models import Binding

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from tenants.models import Portal


def _actor(staff_user: User | None, default: Actor = Actor.SYSTEM) -> Actor:
    return Actor.staff(staff_user) if staff_user is not None else default


def all_desired(portal: Portal, *, with_fields: bool) -> list[bindings.Desired]:
    desired = bindings.desired_placements() + bindings.desired_app_uri() + bindings.desired_types()
    if with_fields and config.consent_field_entities():
        desired += bindings.desired_fields()
    return desired


def do_reconcile_portal(portal: Portal, *, actor: Actor = Actor.SYSTEM, client: PortalClient | None = None,
                        with_fields: bool = True) -> bindings.SyncReport:
    """Verify every binding of the portal and re-create what Bitrix24 dropped (service token)."""
    return bindings.sync(portal, client or PortalClient(portal), all_desired(portal, with_fields=with_fields),
                         repair=True, actor=actor)


def do_add_consent_fields(portal: Portal, *, staff_user: User | None = None,
                          client: PortalClient | None = None) -> bindings.SyncReport:
    """Give contacts and leads (B24_CONSENT_FIELD_ENTITIES) a field of our SMS-consent type."""
    client = client or PortalClient(portal)
    desired = [*bindings.desired_types(), *bindings.desired_fields()]
    with transaction.atomic():
        Binding.objects.filter(portal=portal, kind=Binding.Kind.USERFIELD, state=Binding.State.UNBOUND).update(
            state=Binding.State.PENDING)
    return bindings.sync(portal, client, desired, repair=True, actor=_actor(staff_user), watch_others=True)


def do_rebind(binding: Binding, *, staff_user: User | None = None,
              client: PortalClient | None = None) -> bindings.SyncReport:
    """Staff: bind again now (after an unbind, or to repair without waiting for the reconcile)."""
    portal = binding.portal
    with transaction.atomic():
        Binding.objects.filter(pk=binding.pk).update(state=Binding.State.PENDING)
        journal(portal, JournalEntry.Kind.BINDING, f"rebind {binding.kind} {binding.code} requested",
                actor=_actor(staff_user), staff_user=staff_user)
    return bindings.sync(portal, client or PortalClient(portal), [bindings.desired_for(binding)], repair=True,
                         actor=_actor(staff_user), watch_others=True)


def do_unbind(binding: Binding, *, staff_user: User | None = None,
              client: PortalClient | None = None) -> str:
    """Staff: remove one registration from the portal; the reconcile leaves it alone until a rebind."""
    portal = binding.portal
    client = client or PortalClient(portal)
    try:
        result = bindings.remove(client, portal, binding)
    except B24Error as exc:
        method = bindings.removal_method(binding)
        if (method, exc.code) not in bindings.VANISHED:
            return _unbind_failed(portal, binding, f"{exc.code}: {exc.description}", staff_user)
        check_now_after_error(portal, bindings.VANISHED, method, exc)
        result = {"already gone": exc.code}  # what staff asked for; the rest is verified on the next tick
    except ValueError as exc:
        return _unbind_failed(portal, binding, str(exc), staff_user)
    else:
        if bindings.found_nothing(binding, result):
            check_now(portal, bindings.BINDINGS_CHECK, f"{binding.code} was no longer bound when staff unbound it")
    with transaction.atomic():
        Binding.objects.filter(pk=binding.pk).update(state=Binding.State.UNBOUND, last_error="",
                                                     last_checked_at=timezone.now())
        journal(portal, JournalEntry.Kind.BINDING, f"unbound {binding.kind} {binding.code}",
                actor=_actor(staff_user), staff_user=staff_user, details={"result": result})
    return "unbound"


def _unbind_failed(portal: Portal, binding: Binding, message: str, staff_user: User | None) -> str:
    with transaction.atomic():
        Binding.objects.filter(pk=binding.pk).update(last_error=message[:500], last_checked_at=timezone.now())
        journal(portal, JournalEntry.Kind.BINDING, f"unbind {binding.code} failed: {message}", level="error",
                actor=_actor(staff_user), staff_user=staff_user)
    return message


def do_forget_bindings(portal: Portal) -> int:
    """The portal's data is purged (clean uninstall): Bitrix24 already removed the registrations."""
    deleted, _ = Binding.objects.filter(portal=portal).delete()
    return deleted
