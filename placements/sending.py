"""The widget's send as a `do_*` action: the message (once per client key) and the CRM timeline comment it
owes the item (an outbox row), in one transaction, their tasks dispatched on commit.

Apart from actions.py because the tasks import the binding actions and this module imports the tasks.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from b24portal.dispatch import dispatch_on_commit
from messageservice.models import Message, ProviderAccount
from messageservice.sending import do_send_from_widget
from tenants.models import Portal

from . import config
from .models import TimelineComment
from .tasks import send_timeline_comment

MAX_COMMENT_CHARS = 2000


def timeline_comment_text(portal: Portal, message: Message, *, account_name: str, entity: str, item_id: int) -> str:
    """What the item's timeline says about a widget send: the SMS, then (BBCode, as timeline comments render
    it) a deep link that opens our slider on this item and message. Only the text is shortened to fit."""
    link = config.deep_link(portal, {"entity": entity, "id": str(item_id), "message": str(message.pk)})
    tail = f"\n[url={link}]Open in the SMS app[/url]"
    text = f"SMS to {message.recipient_raw} via {account_name}: {message.body}"
    return text[:MAX_COMMENT_CHARS - len(tail)] + tail


def do_send_from_item(portal: Portal, *, account: ProviderAccount, to: str, body: str, entity: str, item_id: int,
                      bindings: list[dict[str, Any]], user_id: int, client_key: str) -> tuple[Message, bool]:
    """Returns (message, created). A repeated `client_key` returns the first message and writes nothing.
    Whatever the broker does after the commit, the caller gets the message: `messageservice`'s sweeper sends
    it and `tasks.redispatch_timeline_comments` posts the comment once the broker is back."""
    with transaction.atomic():
        message, created = do_send_from_widget(portal, account=account, to=to, body=body, bindings=bindings,
                                               user_id=user_id, client_key=client_key)
        if created:
            comment = TimelineComment.objects.create(
                portal=portal, message=message, user_id=user_id, entity=entity, item_id=item_id,
                comment=timeline_comment_text(portal, message, account_name=account.name, entity=entity,
                                              item_id=item_id),
                next_attempt_at=timezone.now())
            dispatch_on_commit(send_timeline_comment, comment.pk)
    return message, created


def do_requeue_timeline_comments(comments: QuerySet[TimelineComment]) -> int:
    """Staff: post failed timeline comments again (a new attempt budget); returns how many were queued."""
    with transaction.atomic():
        pks = list(comments.filter(state=TimelineComment.State.FAILED).values_list("pk", flat=True))
        TimelineComment.objects.filter(pk__in=pks, state=TimelineComment.State.FAILED).update(
            state=TimelineComment.State.PENDING, attempts=0, next_attempt_at=timezone.now())
        for pk in pks:
            dispatch_on_commit(send_timeline_comment, pk)
    return len(pks)
