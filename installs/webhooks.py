"""Connecting a portal by its incoming webhook (staff, in admin): the form that reads and proves the URL,
and the action that stores the portal and its encrypted webhook.

Such a portal is `Portal.connection == "webhook"`, keyed by `webhook:<domain>` (never a member_id Bitrix24
sends), active at once, with no install run: REST calls go through `oauth.client.PortalClient` as for an
installed app; everything that needs an application context is refused (see `refuse_app_only`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from b24portal.dispatch import dispatch_on_commit
from b24portal.intake import Rejected
from oauth.models import WebhookCredential
from oauth.tasks import check_capabilities
from oauth.webhooks import WebhookAddress, WebhookProof, WebhookRefused, parse_webhook_url, prove_webhook
from tenants import schedule
from tenants.actions import set_status
from tenants.journal import Actor, journal
from tenants.models import JournalEntry, Portal, webhook_member_id

if TYPE_CHECKING:
    from django.contrib.auth.models import User

APP_ONLY_REASON = _("%(domain)s is connected by an incoming webhook: %(what)s needs the installed app "
                    "(application context), which a webhook does not have.")


class AppContextRequired(Rejected):
    """An app-only feature was asked of a webhook-connected portal."""


def refuse_app_only(portal: Portal, what: str) -> None:
    """Raise AppContextRequired (409) for a webhook portal; installed-app portals pass."""
    if portal.is_webhook:
        raise AppContextRequired(str(APP_ONLY_REASON % {"domain": portal.domain, "what": what}), 409)


def app_portal_for_domain(domain: str) -> Portal | None:
    """An installed-app portal (not uninstalled) on this domain: a webhook must not shadow it."""
    return (Portal.objects.filter(domain=domain, connection=Portal.Connection.APP)
            .exclude(status=Portal.Status.DELETED).first())


def webhook_portal_for_domain(domain: str) -> Portal | None:
    """The webhook portal now on this domain, or first added on it (a portal renamed since keeps its
    member_id `webhook:<first domain>`)."""
    return (Portal.objects.filter(connection=Portal.Connection.WEBHOOK)
            .filter(Q(domain=domain) | Q(member_id=webhook_member_id(domain))).order_by("pk").first())


def do_connect_webhook_portal(address: WebhookAddress, proof: WebhookProof, *, staff_user: User) -> Portal:
    """Store (or update) the webhook portal of this domain with its proven webhook; it is active at once.
    A portal whose webhook was refused becomes active again with the new URL."""
    now = timezone.now()
    actor = Actor.staff(staff_user)
    with transaction.atomic():
        if app_portal_for_domain(address.domain) is not None:
            raise WebhookRefused(f"{address.domain} is already connected as an installed app", 409)
        existing = webhook_portal_for_domain(address.domain)
        portal, created = Portal.objects.select_for_update().get_or_create(
            member_id=existing.member_id if existing else webhook_member_id(address.domain),
            defaults={"domain": address.domain, "rest_endpoint": address.rest_endpoint,
                      "connection": Portal.Connection.WEBHOOK, "status": Portal.Status.ACTIVE,
                      "install_started_at": now, "installed_at": now},
        )
        portal.domain, portal.rest_endpoint = address.domain, address.rest_endpoint
        portal.installed_by_user_id = address.user_id
        portal.installed_by_name = proof.user_name
        portal.save(update_fields=["domain", "rest_endpoint", "installed_by_user_id", "installed_by_name", "updated_at"])
        previous = WebhookCredential.objects.filter(portal=portal).values_list("user_id", flat=True).first()
        WebhookCredential.objects.update_or_create(portal=portal, defaults={
            "user_id": address.user_id, "secret": address.secret, "user_name": proof.user_name,
            "is_admin": proof.is_admin, "scopes": proof.scopes, "verified_at": now, "refused_at": None,
            "refused_error": ""})
        details = {"user_id": address.user_id, "is_admin": proof.is_admin, "scopes": proof.scopes}
        if created:
            journal(portal, JournalEntry.Kind.STAFF,
                    f"connected by the incoming webhook of user {address.user_id} ({proof.user_name or '?'})",
                    actor=actor, staff_user=staff_user, details=details)
        else:
            journal(portal, JournalEntry.Kind.STAFF,
                    f"incoming webhook replaced (user {previous} → {address.user_id})",
                    actor=actor, staff_user=staff_user, details=details)
            if portal.status != Portal.Status.ACTIVE:
                set_status(portal, Portal.Status.ACTIVE, message="active again with a new incoming webhook",
                           actor=actor, staff_user=staff_user, blocked_reason="")
        schedule.ensure_portal_scheduled(portal)
        dispatch_on_commit(check_capabilities, portal.pk)
    return portal


class WebhookPortalForm(forms.Form):
    """The admin form: the URL is read, checked against the allow-list and proven in `clean`, so a bad
    URL is a form error and nothing is stored. The field never renders its value back (it holds a secret)."""

    url = forms.CharField(
        label=_("Incoming webhook URL"), max_length=500, strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"size": 80, "autocomplete": "off"}),
        help_text=_("https://<portal>/rest/<user id>/<secret>/ — created in Bitrix24 under Developer resources → "
                    "Other → Inbound webhook, with the scopes the integration needs (e.g. crm)."))

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.address: WebhookAddress | None = None
        self.proof: WebhookProof | None = None

    def clean_url(self) -> str:
        try:
            address = parse_webhook_url(self.cleaned_data["url"])
            if app_portal_for_domain(address.domain) is not None:
                raise WebhookRefused(f"{address.domain} is already connected as an installed app", 409)
            self.proof = prove_webhook(address, webhook_portal_for_domain(address.domain))
        except Rejected as exc:
            raise forms.ValidationError(exc.reason, code="webhook") from None
        self.address = address
        return ""  # the secret is not kept in cleaned_data

    def save(self, staff_user: User) -> Portal:
        if self.address is None or self.proof is None:
            raise ValueError("save() needs a valid form")
        return do_connect_webhook_portal(self.address, self.proof, staff_user=staff_user)
