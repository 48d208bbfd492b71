"""Celery tasks: the periodic reconcile, staff rebind/unbind, and timeline entries for widget messages."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from celery import Task, shared_task

from b24portal.logging import log_context
from oauth.client import PortalClient
from oauth.errors import B24Error
from oauth.periodic import dispatch_due, run_for_each
from oauth.retry import retry_if_worth_it
from tenants.journal import journal
from tenants.models import JournalEntry, Portal

from . import actions
from .crm import ENTITIES
from .models import Binding

if TYPE_CHECKING:
    from django.contrib.auth.models import User

logger = logging.getLogger(__name__)


BINDINGS_CHECK = "bindings"


@shared_task
def reconcile_all_bindings() -> int:
    """Beat tick: the portals whose binding check is due (about once a day each, spread over the day, or at
    once after a trigger), many per task."""
    return dispatch_due(BINDINGS_CHECK, reconcile_bindings_chunk)


@shared_task(acks_late=True)
def reconcile_bindings_chunk(portal_ids: list[int]) -> dict[str, int]:
    def give_up(portal: Portal, exc: B24Error) -> None:
        journal(portal, JournalEntry.Kind.BINDING, f"reconcile failed: {exc.code} {exc.description}", level="error")

    return run_for_each(BINDINGS_CHECK, portal_ids, lambda portal: actions.do_reconcile_portal(portal).summary(),
                        give_up)


@shared_task(bind=True, max_retries=5, acks_late=True)
def reconcile_portal_bindings(self: Task, portal_id: int) -> str:
    portal = Portal.objects.filter(pk=portal_id, status=Portal.Status.ACTIVE).first()
    if portal is None:
        return "skipped"
    with log_context(member_id=portal.member_id):
        try:
            report = actions.do_reconcile_portal(portal)
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.BINDING, f"reconcile failed: {exc.code} {exc.description}",
                    level="error")
            return exc.code
        return report.summary()


def _staff(staff_user_id: int | None) -> User | None:
    from django.contrib.auth import get_user_model

    return get_user_model().objects.filter(pk=staff_user_id).first() if staff_user_id else None


@shared_task
def rebind_binding(binding_id: int, staff_user_id: int | None = None) -> str:
    binding = Binding.objects.select_related("portal").get(pk=binding_id)
    try:
        return actions.do_rebind(binding, staff_user=_staff(staff_user_id)).summary()
    except B24Error as exc:
        journal(binding.portal, JournalEntry.Kind.BINDING, f"rebind {binding.code} failed: {exc.code}",
                level="error")
        return exc.code


@shared_task
def unbind_binding(binding_id: int, staff_user_id: int | None = None) -> str:
    binding = Binding.objects.select_related("portal").get(pk=binding_id)
    return actions.do_unbind(binding, staff_user=_staff(staff_user_id))


@shared_task
def add_consent_fields(portal_id: int, staff_user_id: int | None = None) -> str:
    portal = Portal.objects.get(pk=portal_id)
    try:
        return actions.do_add_consent_fields(portal, staff_user=_staff(staff_user_id)).summary()
    except B24Error as exc:
        journal(portal, JournalEntry.Kind.BINDING, f"adding the consent fields failed: {exc.code}", level="error")
        return exc.code


@shared_task(bind=True, max_retries=5, acks_late=True)
def add_timeline_comment(self: Task, portal_id: int, user_id: int, entity: str, item_id: int, comment: str) -> str:
    """Record a widget-sent SMS in the item's CRM timeline, as the user who sent it (their own token)."""
    portal = Portal.objects.get(pk=portal_id)
    with log_context(member_id=portal.member_id):
        try:
            PortalClient(portal, user_id=user_id).call("crm.timeline.comment.add", {"fields": {
                "ENTITY_ID": item_id, "ENTITY_TYPE": ENTITIES[entity].timeline_type, "COMMENT": comment}})
        except B24Error as exc:
            retry_if_worth_it(self, exc)
            journal(portal, JournalEntry.Kind.REST, f"timeline comment on {entity} {item_id} failed: {exc.code}",
                    level="warning", details={"user_id": user_id})
            return exc.code
    return "ok"
