"""Support-staff admin for SMS: provider accounts (secrets masked) and the message queue (millions of rows:
no COUNT(*) of the whole table, indexed filters, exact-match search)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, cast

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext_lazy as _

from b24portal.crypto import mask
from b24portal.logging import redact
from tenants.journal import Actor
from tenants.models import Portal

from . import accounts, staff
from .carriers import CARRIER_CHOICES, CredentialField, carrier_class
from .models import Message, PhoneConsent, ProviderAccount
from .phones import InvalidPhoneNumber, mask_phone, normalize_phone
from .stats import delivery_stats
from .status import CHART_LABELS, CHART_ORDER
from .tasks import sync_sender

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def _actor(request: HttpRequest) -> Actor:
    # The admin site serves only logged-in staff (AdminSite.has_permission), so its user is never anonymous.
    return Actor.staff(cast("User", request.user))


# -- provider accounts ----------------------------------------------------------------------------------


def credential_input(kind: str, name: str) -> str:
    """The form field of one carrier's credential (every carrier's inputs are on the form; the selected
    carrier's are used)."""
    return f"cred_{kind}_{name}"


class ProviderAccountForm(forms.ModelForm):
    """Credentials are labelled inputs declared by each carrier (`Carrier.credential_fields`): a secret is a
    password input never filled with the stored value (blank keeps it); validated with the carrier's rules."""

    base_url = forms.URLField(required=False, max_length=300, assume_scheme="https",
                              help_text=_("Carrier API base URL override (http or https)"))

    class Meta:
        model = ProviderAccount
        fields = ("portal", "carrier", "code", "name", "sender", "base_url", "options", "is_active")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = dict(self.instance.credentials or {}) if self.instance.pk else {}
        same_carrier = self.instance.pk is not None
        for kind, _label in CARRIER_CHOICES:
            for field in carrier_class(kind).credential_fields:
                if not (same_carrier and self.instance.carrier == kind and stored.get(field.name)):
                    continue
                form_field = self.fields[credential_input(kind, field.name)]
                if field.secret:
                    form_field.help_text = f"{_('Stored; leave blank to keep.')} {field.hint}".strip()
                else:
                    form_field.initial = stored[field.name]

    def entered_credentials(self, kind: str) -> dict[str, str] | None:
        """The selected carrier's inputs; None when nothing was typed (keep what is stored)."""
        if kind not in dict(CARRIER_CHOICES):
            return None
        typed = {field.name: str(self.cleaned_data.get(credential_input(kind, field.name)) or "")
                 for field in carrier_class(kind).credential_fields}
        return typed if any(typed.values()) else None

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns (the stubs allow None)
        portal = cleaned.get("portal") or (self.instance.portal if self.instance.pk else None)
        if portal is None:
            return cleaned
        data = {name: cleaned.get(name) for name in ("carrier", "code", "name", "sender", "base_url", "options",
                                                     "is_active") if name in cleaned}
        kind = str(cleaned.get("carrier") or "")
        data["credentials"] = self.entered_credentials(kind)
        if data["credentials"] is None and self.instance.pk and self.instance.carrier != kind:
            data["credentials"] = {}  # a new carrier: the old one's credentials do not apply
        try:
            self.service_data = data
            accounts.clean_account_data(portal, data, self.instance if self.instance.pk else None)
        except ValidationError as exc:
            for name, errors in exc.message_dict.items():
                if name == "credentials":
                    self._credential_errors(kind, errors)
                else:
                    self.add_error(name if name in self.fields else None, errors)
        return cleaned

    def _credential_errors(self, kind: str, errors: list[str]) -> None:
        names = carrier_class(kind).credential_names() if kind in dict(CARRIER_CHOICES) else []
        for error in errors:
            target = next((credential_input(kind, n) for n in names if error.startswith(n)), None)
            self.add_error(target, error)


def _credential_form_field(field: CredentialField) -> forms.CharField:
    widget: forms.Widget = (forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
                            if field.secret else forms.TextInput())
    return forms.CharField(label=field.label, required=False, max_length=field.max_length, widget=widget,
                           help_text=field.hint, strip=True)


# The carriers' declared inputs are fields of the form class (admin checks its fieldsets against them).
for _kind, _label in CARRIER_CHOICES:
    for _field in carrier_class(_kind).credential_fields:
        ProviderAccountForm.base_fields[credential_input(_kind, _field.name)] = _credential_form_field(_field)
        ProviderAccountForm.declared_fields[credential_input(_kind, _field.name)] = _credential_form_field(_field)


def _plain_fields(kind: str) -> frozenset[str]:
    if kind not in dict(CARRIER_CHOICES):
        return frozenset()
    return carrier_class(kind).plain_names()


class SendTestSmsForm(forms.Form):
    to = forms.CharField(label=_("Phone number"), max_length=32)


class PortalWithAccountsFilter(admin.SimpleListFilter):
    """Portals that have SMS accounts (a small table), instead of listing every portal."""

    title = _("portal")
    parameter_name = "portal"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        portal_ids = ProviderAccount.objects.values("portal_id").distinct()
        return [(str(p.pk), p.domain) for p in Portal.objects.filter(pk__in=portal_ids).only("pk", "domain")[:200]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(portal_id=int(value)) if value and value.isdigit() else queryset


@admin.register(ProviderAccount)
class ProviderAccountAdmin(admin.ModelAdmin):
    form = ProviderAccountForm
    list_display = ("code", "portal", "carrier", "name", "sender", "is_active", "registration_badge",
                    "registered_at")
    list_filter = ("carrier", "is_active", "registration_state", PortalWithAccountsFilter)
    search_fields = ("code", "name", "portal__domain", "portal__member_id")
    list_select_related = ("portal",)
    raw_id_fields = ("portal",)
    readonly_fields = ("credentials_masked", "registration_state", "registered_code", "registered_handler_masked",
                       "registration_error", "registered_at", "created_at", "updated_at")
    fieldsets = (
        (None, {"fields": ("portal", "carrier", "code", "name", "sender", "base_url", "options", "is_active")}),
        (_("Credentials"), {"fields": ("credentials_masked",)}),
        (_("Bitrix24 sender"), {"fields": ("registration_state", "registered_code", "registered_handler_masked",
                                           "registration_error", "registered_at")}),
        (_("Record"), {"fields": ("created_at", "updated_at")}),
    )
    actions = ["send_test_sms", "reregister_sender", "deactivate"]
    show_full_result_count = False

    class Media:
        js = ("messageservice/carrier_fields.js",)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # messages refer to it; deactivate instead

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        """One fieldset of labelled credential inputs per carrier (the page shows the selected carrier's)."""
        per_carrier = [
            (_("Credentials: %(carrier)s") % {"carrier": label},
             {"fields": [credential_input(kind, f.name) for f in carrier_class(kind).credential_fields]
              or [], "classes": ("carrier-credentials", f"carrier-{kind}")})
            for kind, label in CARRIER_CHOICES if carrier_class(kind).credential_fields]
        base = list(self.fieldsets)
        return [*base[:2], *per_carrier, *base[2:]]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "portal") if obj is not None else self.readonly_fields

    @admin.display(description=_("registered handler"))
    def registered_handler_masked(self, obj: ProviderAccount) -> str:
        # The key in the handler URL is the only proof for messages without an author: never shown.
        return redact(obj.registered_handler) if obj.registered_handler else "—"

    @admin.display(description=_("stored credentials"))
    def credentials_masked(self, obj: ProviderAccount) -> str:
        creds = obj.credentials or {}
        if not creds:
            return "—"
        plain = _plain_fields(obj.carrier)  # declared and not secret; anything else is masked
        return format_html_join(", ", "{}: {}", ((key, str(value) if key in plain else mask(str(value)))
                                                 for key, value in sorted(creds.items())))

    @admin.display(description=_("sender in Bitrix24"), ordering="registration_state")
    def registration_badge(self, obj: ProviderAccount) -> str:
        colors = {"registered": "#2b8a3e", "pending": "#1971c2", "failed": "#c92a2a", "removed": "#868e96"}
        return format_html('<b style="color:{}" title="{}">{}</b>', colors.get(obj.registration_state, "#333"),
                           obj.registration_error, obj.get_registration_state_display())

    def save_model(self, request: HttpRequest, obj: ProviderAccount, form: Any, change: bool) -> None:
        data = dict(form.service_data)
        saved = accounts.do_save_account(obj.portal, data=data, account=obj if change else None,
                                         actor=_actor(request))
        obj.pk = saved.pk

    @admin.action(description=_("Send a test SMS"))
    def send_test_sms(self, request: HttpRequest, queryset: QuerySet[ProviderAccount]) -> HttpResponse | None:
        form = SendTestSmsForm(request.POST if "apply" in request.POST else None)
        if "apply" in request.POST and form.is_valid():
            sent = 0
            for account in queryset.select_related("portal"):
                try:
                    message = accounts.do_send_test_sms(account.portal, account, to=form.cleaned_data["to"],
                                                        actor=_actor(request))
                except ValidationError as exc:
                    self.message_user(request, f"{account.code}: {'; '.join(exc.messages)}", messages.ERROR)
                    continue
                sent += 1
                message.refresh_from_db()
                text, _final = accounts.describe_test_result(message)
                ok = message.state not in (Message.State.FAILED, Message.State.NEEDS_REVIEW)
                self.message_user(request, f"{account.code}: test SMS {message.message_id}: {text}",
                                  messages.SUCCESS if ok else messages.WARNING)
            return None
        return TemplateResponse(request, "messageservice/admin/send_test_sms.html", {
            **self.admin_site.each_context(request), "title": _("Send a test SMS"), "form": form,
            "accounts": queryset.select_related("portal"), "opts": self.model._meta,
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
        })

    @admin.action(description=_("Re-register sender in Bitrix24"))
    def reregister_sender(self, request: HttpRequest, queryset: QuerySet[ProviderAccount]) -> None:
        count = 0
        for account_id in queryset.values_list("pk", flat=True):
            sync_sender.delay(account_id)
            count += 1
        self.message_user(request, _("Sender sync queued for %(n)d account(s).") % {"n": count}, messages.SUCCESS)

    @admin.action(description=_("Deactivate (remove sender from Bitrix24)"))
    def deactivate(self, request: HttpRequest, queryset: QuerySet[ProviderAccount]) -> None:
        count = 0
        for account in queryset.filter(is_active=True).select_related("portal"):
            accounts.do_deactivate_account(account.portal, account, actor=_actor(request))
            count += 1
        self.message_user(request, _("%(n)d account(s) deactivated.") % {"n": count}, messages.SUCCESS)


# -- messages -------------------------------------------------------------------------------------------


class EstimatedCountPaginator(Paginator):
    """No COUNT(*) over millions of rows: the planner's estimate (pg_class.reltuples) for the unfiltered
    list, and a count capped at SMS_ADMIN_COUNT_CAP for filtered lists (deeper pages are not offered)."""

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                               [queryset.model._meta.db_table])
                row = cursor.fetchone()
            if row and row[0] and row[0] > settings.SMS_ADMIN_COUNT_CAP:
                return int(row[0])
        cap = int(settings.SMS_ADMIN_COUNT_CAP)
        if isinstance(queryset, QuerySet):
            return queryset.order_by()[:cap].count()
        return min(len(queryset), cap)


class CarrierFilter(admin.SimpleListFilter):
    title = _("carrier")
    parameter_name = "carrier"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(CARRIER_CHOICES)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(carrier=self.value()) if self.value() else queryset


_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
_PHONEISH = re.compile(r"^\+?[\d\s().-]{6,20}$")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ("created_at", "portal", "sender_code", "recipient_masked", "state", "status",
                    "carrier_status", "attempts", "last_error_short")
    list_filter = (PortalWithAccountsFilter, "state", "status", CarrierFilter, "origin", "created_at")
    list_select_related = ("portal", "account")
    search_fields = ("message_id",)  # the real lookup is get_search_results: exact, indexed columns only
    search_help_text = _("Bitrix24 message_id, carrier message id, or phone number (exact)")
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-created_at", "-id")
    raw_id_fields = ("portal", "account")
    actions = ["retry_send", "repush_status", "cancel", "mark_sent", "mark_failed"]
    change_list_template = "messageservice/admin/message_change_list.html"
    fields = ("portal", "account", "carrier", "message_id", "origin", "recipient_masked", "body",
              "author_user_id", "bindings", "meta", "state", "attempts", "claimed_at", "next_attempt_at",
              "send_deadline_at", "last_error", "sent_at", "status", "carrier_status", "carrier_message_id", "cost",
              "status_changed_at", "final_at", "next_poll_at", "poll_attempts", "pushed_status", "push_due",
              "pushed_at", "created_at", "updated_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None  # the list and its actions; rows change only through the actions

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Message], search_term: str
                           ) -> tuple[QuerySet[Message], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if _HEX32.match(term):
            return queryset.filter(Q(message_id=term.lower()) | Q(carrier_message_id=term)), False
        if _PHONEISH.match(term):
            try:
                return queryset.filter(recipient=normalize_phone(term)), False
            except InvalidPhoneNumber:
                pass
        return queryset.filter(carrier_message_id=term), False

    @admin.display(description=_("sender"), ordering="account__code")
    def sender_code(self, obj: Message) -> str:
        return obj.account.code

    @admin.display(description=_("recipient"))
    def recipient_masked(self, obj: Message) -> str:
        return mask_phone(obj.recipient or obj.recipient_raw)

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: Message) -> str:
        if not obj.last_error:
            return "—"
        return format_html('<span title="{}">{}</span>', obj.last_error,
                           obj.last_error[:60] + ("…" if len(obj.last_error) > 60 else ""))

    def _each(self, request: HttpRequest, queryset: QuerySet[Message], action: Any, done: str) -> None:
        results = [action(message, actor=_actor(request)) for message in queryset.select_related("portal")]
        skipped = results.count(False)
        self.message_user(request, f"{results.count(True)} message(s) {done}"
                          + (f"; {skipped} skipped (not in a state that allows it)" if skipped else ""),
                          messages.SUCCESS if not skipped else messages.WARNING)

    @admin.action(description=_("Retry send (failed or needs review only)"))
    def retry_send(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._each(request, queryset, staff.do_retry_message, "queued to send again")

    @admin.action(description=_("Re-push status to Bitrix24"))
    def repush_status(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._each(request, queryset, staff.do_repush_status, "queued for a status re-push")

    def get_urls(self) -> list[Any]:
        stats = self.admin_site.admin_view(self.delivery_stats_view)
        return [path("stats/", stats, name="messageservice_message_stats"), *super().get_urls()]

    def delivery_stats_view(self, request: HttpRequest) -> HttpResponse:
        """Messages per day by delivery status (a chart), and totals per carrier and per portal."""
        def number(name: str, default: int | None) -> int | None:
            value = request.GET.get(name, "")
            return int(value) if value.isdigit() else default

        days = min(max(number("days", 30) or 30, 1), 365)
        portal_id = number("portal", None)
        carrier = request.GET.get("carrier") or None
        if carrier not in dict(CARRIER_CHOICES):
            carrier = None
        stats = delivery_stats(days=days, portal_id=portal_id, carrier=carrier)
        context = {
            **self.admin_site.each_context(request), "title": _("SMS delivery statistics"), "stats": stats,
            "total": stats["total"], "days": days, "day_choices": [7, 30, 90, 365], "portal_id": portal_id,
            "carrier": carrier, "carriers": CARRIER_CHOICES, "headers": [CHART_LABELS[s] for s in CHART_ORDER],
            "portals": Portal.objects.filter(sms_accounts__isnull=False).distinct().only("pk", "domain"),
            "tables": [(_("Per carrier"), stats["per_carrier"]), (_("Per portal (top 50)"), stats["per_portal"])],
        }
        return TemplateResponse(request, "messageservice/admin/delivery_stats.html", context)

    @admin.action(description=_("Cancel (not yet sent)"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._each(request, queryset, staff.do_cancel_message, "cancelled")

    @admin.action(description=_("Mark as sent (needs review: checked with the carrier)"))
    def mark_sent(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._each(request, queryset, staff.do_mark_sent, "marked as sent")

    @admin.action(description=_("Mark as failed (needs review: checked with the carrier)"))
    def mark_failed(self, request: HttpRequest, queryset: QuerySet[Message]) -> None:
        self._each(request, queryset, staff.do_mark_failed, "marked as failed")


@admin.register(PhoneConsent)
class PhoneConsentAdmin(admin.ModelAdmin):
    list_display = ("phone_masked", "portal", "opted_in", "source", "changed_by_user_id", "changed_at")
    list_filter = ("opted_in", "source")
    list_select_related = ("portal",)
    raw_id_fields = ("portal",)
    readonly_fields = ("portal", "phone", "opted_in", "changed_at", "changed_by_user_id", "source")
    show_full_result_count = False

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[PhoneConsent], search_term: str
                           ) -> tuple[QuerySet[PhoneConsent], bool]:
        try:
            return (queryset.filter(phone=normalize_phone(search_term)), False) if search_term else (queryset, False)
        except InvalidPhoneNumber:
            return queryset.none(), False

    search_fields = ("phone",)

    @admin.display(description=_("phone"))
    def phone_masked(self, obj: PhoneConsent) -> str:
        return mask_phone(obj.phone)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # decisions come from users (widget) through do_set_consent
