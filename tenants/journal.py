"""The portal's journal: what happened to a portal, by whom, kept even when its data is purged."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from django.contrib.auth import get_user_model

from b24portal.logging import redact_value

from .models import JournalEntry, Portal

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser, User

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who caused a change: the system, Bitrix24 (an event or answer), a staff user or a portal user.

    Stored in the journal as text ("staff:alice", "user:7"); code asks `is_staff` instead of parsing it."""

    kind: str
    name: str = ""

    SYSTEM: ClassVar[Actor]
    BITRIX24: ClassVar[Actor]

    @classmethod
    def staff(cls, user: AbstractBaseUser) -> Actor:
        return cls("staff", user.get_username())

    @classmethod
    def portal_user(cls, user_id: int) -> Actor:
        return cls("user", str(user_id))

    @property
    def is_staff(self) -> bool:
        return self.kind == "staff"

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else self.kind


Actor.SYSTEM = Actor("system")
Actor.BITRIX24 = Actor("bitrix24")


def staff_actor(staff_user_id: int | None) -> tuple[User | None, Actor]:
    """The staff user a queued staff action names (by id: tasks carry ids), and the actor to journal."""
    staff_user = get_user_model().objects.filter(pk=staff_user_id).first() if staff_user_id else None
    return staff_user, (Actor.staff(staff_user) if staff_user else Actor.SYSTEM)


def journal(portal: Portal, kind: str, message: str, *, level: str = "info",
            details: Mapping[str, Any] | None = None, actor: Actor | str = Actor.SYSTEM,
            staff_user: User | None = None) -> JournalEntry:
    """Write a journal entry; warnings and errors also become the portal's "last problem"."""
    entry = JournalEntry.objects.create(
        portal=portal, kind=kind, level=level, message=message[:500],
        details=redact_value(dict(details or {})), actor=str(actor)[:100], staff_user=staff_user,
    )
    if level in (JournalEntry.Level.WARNING, JournalEntry.Level.ERROR):
        Portal.objects.filter(pk=portal.pk).update(last_problem=message[:500], last_problem_at=entry.created_at)
        portal.last_problem, portal.last_problem_at = message[:500], entry.created_at
    log = logger.warning if level != "info" else logger.info
    log(message, extra={"member_id": portal.member_id, "journal_kind": kind, "actor": str(actor)})
    return entry
