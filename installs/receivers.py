"""The install flow decides what REST-layer findings mean for a portal's lifecycle."""

from __future__ import annotations

from typing import Any

from django.dispatch import receiver

from oauth.errors import B24Error, B24PaymentRequired
from oauth.models import PortalToken
from oauth.signals import portal_endpoint_changed, token_refresh_refused, webhook_refused
from tenants.actions import do_block_portal, do_change_domain, do_mark_needs_reinstall
from tenants.journal import Actor, journal
from tenants.models import JournalEntry, Portal


@receiver(token_refresh_refused, dispatch_uid="installs.token_refresh_refused")
def on_refresh_refused(sender: Any, *, portal: Portal, token: PortalToken, error: B24Error, **_: Any) -> None:
    """The service token's refresh refused: the portal needs a reinstall, or is blocked for payment. A user's
    own token being refused concerns only that user."""
    if not token.is_service:
        journal(portal, JournalEntry.Kind.TOKEN, f"refresh of user {token.user_id}'s token refused: {error.code}",
                level="warning", actor=Actor.BITRIX24)
    elif isinstance(error, B24PaymentRequired):
        do_block_portal(portal, reason="payment required (refresh refused)", actor=Actor.BITRIX24)
    else:
        do_mark_needs_reinstall(portal, reason=f"token refresh refused: {error.code}")


@receiver(portal_endpoint_changed, dispatch_uid="installs.portal_endpoint_changed")
def on_endpoint_changed(sender: Any, *, portal: Portal, domain: str, rest_endpoint: str, source: str,
                        **_: Any) -> None:
    do_change_domain(portal, domain=domain, rest_endpoint=rest_endpoint, source=source)


@receiver(webhook_refused, dispatch_uid="installs.webhook_refused")
def on_webhook_refused(sender: Any, *, portal: Portal, error: B24Error, **_: Any) -> None:
    """A webhook portal's webhook answered 401 (deleted, or its secret regenerated): like a refused refresh,
    the portal needs staff to act (add the webhook's new URL in admin); background work stops meanwhile."""
    do_mark_needs_reinstall(portal, reason=f"incoming webhook refused ({error.code}); add its new URL in admin")
