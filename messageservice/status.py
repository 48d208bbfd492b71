"""Delivery status: the one vocabulary, its forward-only order, and how pages show it.

`DeliveryStatus` is exactly what Bitrix24's `messageservice.message.status.update` accepts
(api-reference/messageservice/messageservice-message-status-update.md). Carriers map their raw statuses
onto it as data (`Carrier.status_map`); `Message.advance_status` / `MessageQuerySet.advance_status`
move a message's `status`, and only ever forward (`is_forward`). The one other writer is staff's retry
(`staff.do_retry_message`), which starts the delivery over from no status.

A message has no delivery status until its carrier answers (NULL); pages then show where it is in our
pipeline instead (`display_status`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from django.db import models
from django.utils.translation import gettext_lazy as _

if TYPE_CHECKING:
    from django_stubs_ext import StrOrPromise


class DeliveryStatus(models.TextChoices):
    """Normalized delivery status; exactly the values Bitrix24's `messageservice.message.status.update`
    accepts."""

    #: accepted by the carrier, not yet handed to the mobile operator (waiting, scheduled, sending)
    QUEUED = "queued", _("Queued")
    #: handed to the operator; no delivery receipt yet (may stay final if the operator sends no DLR)
    SENT = "sent", _("Sent")
    #: the handset received it (delivery receipt, or "read"/"clicked" which imply delivery)
    DELIVERED = "delivered", _("Delivered")
    #: the operator tried and gave up: expired, handset unreachable or failing
    UNDELIVERED = "undelivered", _("Undelivered")
    #: never sent or rejected: invalid/blocked number, no route, no funds, stopped, not found
    FAILED = "failed", _("Failed")


#: statuses after which a message never changes again
FINAL: frozenset[DeliveryStatus] = frozenset(
    {DeliveryStatus.DELIVERED, DeliveryStatus.UNDELIVERED, DeliveryStatus.FAILED}
)

#: final statuses that mean the recipient did not get the message
UNSUCCESSFUL: frozenset[DeliveryStatus] = frozenset({DeliveryStatus.UNDELIVERED, DeliveryStatus.FAILED})

#: progress order; final states share the top rank, so one final state never replaces another
RANK: Mapping[DeliveryStatus, int] = {
    DeliveryStatus.QUEUED: 0,
    DeliveryStatus.SENT: 1,
    DeliveryStatus.DELIVERED: 2,
    DeliveryStatus.UNDELIVERED: 2,
    DeliveryStatus.FAILED: 2,
}


def is_forward(old: DeliveryStatus | str | None, new: DeliveryStatus | str | None) -> bool:
    """True when moving from `old` to `new` is progress. Bitrix24 itself accepts any change (a late
    `sent` can overwrite `delivered`), so callers enforce this before pushing a status."""
    if new is None:
        return False
    if old is None:
        return True
    return RANK[DeliveryStatus(new)] > RANK[DeliveryStatus(old)]


def behind(status: DeliveryStatus | str) -> list[DeliveryStatus]:
    """The statuses `status` may replace (besides none at all)."""
    return [s for s, rank in RANK.items() if rank < RANK[DeliveryStatus(status)]]


# -- display -------------------------------------------------------------------------------------------------

#: What a message without a delivery status shows, by its pipeline state (Message.State values): where it
#: is in our queue, in the delivery vocabulary.
PENDING_STATES: Mapping[str, DeliveryStatus] = {
    "accepted": DeliveryStatus.QUEUED,
    "retrying": DeliveryStatus.QUEUED,
    "sending": DeliveryStatus.QUEUED,
    "sent_to_carrier": DeliveryStatus.SENT,
    "needs_review": DeliveryStatus.QUEUED,
    "failed": DeliveryStatus.FAILED,
    "cancelled": DeliveryStatus.FAILED,
}


def display_status(status: str | None, state: str) -> str:
    """The one status word a page shows for a message."""
    return str(status or PENDING_STATES.get(state, DeliveryStatus.QUEUED))


#: The admin chart's series: the delivery statuses in pipeline order, plus "" for messages with no status yet.
CHART_ORDER: list[str] = ["", *DeliveryStatus.values]
CHART_COLOURS: Mapping[str, str] = {"": "#adb5bd", "queued": "#74c0fc", "sent": "#1c7ed6", "delivered": "#2b8a3e",
                                    "undelivered": "#e8590c", "failed": "#c92a2a"}
# Lazy: a page shows them in its user's language (forcing them here would fix them in English at import).
CHART_LABELS: Mapping[str, StrOrPromise] = {"": _("not sent yet"),
                                            **{value: label for value, label in DeliveryStatus.choices}}
