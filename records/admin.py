"""Admin of the records sync: jobs (with a chart of jobs per day by outcome, retry and cancel), records,
API keys (the key shown once at creation; revoke; masked secrets), stage mapping (editable; load from
Bitrix24) and the reply outbox (retry)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.models import User
from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext_lazy as _

from b24portal.charts import daily_series, stacked_bars_svg
from b24portal.crypto import mask
from b24portal.dispatch import dispatch_on_commit
from tenants.models import Portal

from .applying import do_cancel_jobs, do_retry_jobs
from .keys import assign_new_key, do_revoke_api_keys, do_rotate_callback_secret
from .models import ApiKey, Record, Reply, StageMapping, SyncJob
from .replies import do_retry_replies
from .tasks import load_stage_mapping, request_apply

CHART_DAYS = 30
OUTCOME_COLOURS = {"succeeded": "#27ae60", "failed": "#c0392b", "cancelled": "#7f8c8d", "pending": "#f39c12",
                   "running": "#2980b9"}
OUTCOME_ORDER = ("succeeded", "failed", "cancelled", "running", "pending")


def short(text: str, length: int = 60) -> str | SafeString:
    if not text:
        return "—"
    return format_html('<span title="{}">{}</span>', text, text[:length] + ("…" if len(text) > length else ""))


def jobs_chart(days: int = CHART_DAYS) -> SafeString:
    """Jobs per day (by creation) stacked by state: one grouped query over the created_at index."""
    since = timezone.localdate() - timedelta(days=days - 1)
    rows = (SyncJob.objects.filter(created_at__date__gte=since).annotate(day=TruncDate("created_at"))
            .values("day", "state").annotate(n=Count("id")).order_by())
    series = daily_series(rows, key="state", value="n", days=days)
    labels = {value: str(label) for value, label in SyncJob.State.choices}
    return stacked_bars_svg(series, title=f"Records jobs per day by outcome (last {days} days)",
                            colours=OUTCOME_COLOURS, order=OUTCOME_ORDER, labels=labels)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None  # the list and its actions; rows change only through the actions

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(SyncJob)
class SyncJobAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "portal", "external_id", "action", "state", "attempts", "lead_id", "source",
                    "last_error_short")
    list_filter = ("state", "action", "source", "created_at")
    list_select_related = ("portal", "record")
    search_fields = ("record__external_id",)
    search_help_text = _("Job id, the record's external id or an idempotency key (exact)")
    show_full_result_count = False
    list_per_page = 50
    ordering = ("-id",)
    actions = ["retry", "cancel"]
    change_list_template = "records/admin/syncjob_change_list.html"
    fields = ("portal", "record", "action", "state", "payload", "reply_user", "attempts", "next_attempt_at",
              "claimed_at", "deadline", "lead_id", "last_error", "source", "idempotency_key", "reply_queue",
              "api_key", "created_at", "updated_at", "finished_at")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[SyncJob], search_term: str
                           ) -> tuple[QuerySet[SyncJob], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(record__external_id=term) | Q(idempotency_key=term)
        if term.isdigit() and len(term) < 19:
            match |= Q(pk=int(term))
        return queryset.filter(match), False

    @admin.display(description=_("record"), ordering="record__external_id")
    def external_id(self, obj: SyncJob) -> str:
        return obj.record.external_id

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: SyncJob) -> str | SafeString:
        return short(obj.last_error)

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        return super().changelist_view(request, {**(extra_context or {}), "jobs_chart": jobs_chart()})

    @admin.action(description=_("Retry (failed or cancelled jobs)"))
    def retry(self, request: HttpRequest, queryset: QuerySet[SyncJob]) -> None:
        jobs = list(queryset.select_related(None).only("pk", "state", "portal_id"))
        portals = do_retry_jobs(jobs)
        for portal_id in portals:
            request_apply(portal_id)
        retried = sum(1 for job in jobs if job.state in (SyncJob.State.FAILED, SyncJob.State.CANCELLED))
        self.message_user(request, f"{retried} job(s) queued again; {len(jobs) - retried} skipped (not failed "
                                   "or cancelled)", messages.SUCCESS if retried == len(jobs) else messages.WARNING)

    @admin.action(description=_("Cancel (pending jobs; the caller gets an error reply)"))
    def cancel(self, request: HttpRequest, queryset: QuerySet[SyncJob]) -> None:
        jobs = list(queryset.select_related("record", "api_key"))
        cancelled = do_cancel_jobs(jobs)
        self.message_user(request, f"{cancelled} job(s) cancelled; {len(jobs) - cancelled} skipped (not pending)",
                          messages.SUCCESS if cancelled == len(jobs) else messages.WARNING)


@admin.register(Record)
class RecordAdmin(ReadOnlyAdmin):
    list_display = ("external_id", "portal", "lead_id", "stage", "last_outcome", "last_error_short", "updated_at")
    list_filter = ("last_outcome",)
    list_select_related = ("portal",)
    search_fields = ("external_id",)
    search_help_text = _("External id or lead id (exact)")
    show_full_result_count = False
    ordering = ("-id",)
    fields = ("portal", "external_id", "lead_id", "stage", "last_outcome", "last_error", "reply_queue", "api_key",
              "last_written", "own_multifields", "last_written_at", "created_at", "updated_at")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Record], search_term: str
                           ) -> tuple[QuerySet[Record], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        match = Q(external_id=term)
        if term.isdigit() and len(term) < 19:
            match |= Q(lead_id=int(term))
        return queryset.filter(match), False

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: Record) -> str | SafeString:
        return short(obj.last_error)


class ApiKeyForm(forms.ModelForm):
    callback_url = forms.URLField(max_length=500, required=False, assume_scheme="https",
                                  help_text=_("Replies (job outcomes, CRM changes) are POSTed here as JSON"))

    class Meta:
        model = ApiKey
        fields = ("portal", "name", "callback_url")


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    form = ApiKeyForm
    list_display = ("name", "portal", "prefix_shown", "callback_url", "is_active", "created_at", "last_used_at",
                    "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    list_select_related = ("portal",)
    search_fields = ("name", "prefix", "portal__domain")
    raw_id_fields = ("portal",)
    actions = ["revoke", "rotate_callback_secret", "load_stages"]
    readonly_fields = ("prefix_shown", "callback_secret_masked", "created_at", "last_used_at", "revoked_at")

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[Any]:
        if obj is None:
            return ["portal", "name", "callback_url"]
        return ["portal", "name", "prefix_shown", "callback_url", "callback_secret_masked", "created_at",
                "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> tuple[str, ...]:
        return (*self.readonly_fields, "portal") if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: jobs and replies keep naming the key

    @admin.display(description=_("key"))
    def prefix_shown(self, obj: ApiKey) -> str:
        return f"{obj.prefix}…"

    @admin.display(description=_("callback secret"))
    def callback_secret_masked(self, obj: ApiKey) -> str:
        return mask(obj.callback_secret)

    @admin.display(description=_("active"), boolean=True)
    def is_active(self, obj: ApiKey) -> bool:
        return obj.revoked_at is None

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            # Shown once, on the page answering this request; only its hash is stored.
            request._records_new_key = (assign_new_key(obj), obj.callback_secret)  # type: ignore[attr-defined]
        super().save_model(request, obj, form, change)

    def response_add(self, request: HttpRequest, obj: ApiKey, post_url_continue: str | None = None) -> HttpResponse:
        key, secret = request._records_new_key  # type: ignore[attr-defined]
        return self._show_once(request, obj, key=key, secret=secret)

    def _show_once(self, request: HttpRequest, obj: ApiKey, *, key: str = "", secret: str = "") -> HttpResponse:
        context = {**self.admin_site.each_context(request), "title": _("Copy it now: it is shown only once"),
                   "api_key": obj, "key": key, "secret": secret, "opts": self.model._meta,
                   "change_url": reverse("admin:records_apikey_change", args=[obj.pk])}
        response = TemplateResponse(request, "records/admin/api_key_created.html", context)
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description=_("Revoke (the key stops working at once)"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        revoked = do_revoke_api_keys(list(queryset))
        self.message_user(request, f"{revoked} key(s) revoked")

    @admin.action(description=_("New callback secret (shown once)"))
    def rotate_callback_secret(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> HttpResponse | None:
        keys = list(queryset.select_related("portal")[:2])
        if len(keys) != 1:
            self.message_user(request, "Select exactly one key.", messages.WARNING)
            return None
        return self._show_once(request, keys[0], secret=do_rotate_callback_secret(keys[0]))

    @admin.action(description=_("Load lead stages of these keys' portals from Bitrix24"))
    def load_stages(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        portal_ids = sorted(set(queryset.values_list("portal_id", flat=True)))
        queue_stage_loads(request, portal_ids)
        self.message_user(request, f"Loading the stages of {len(portal_ids)} portal(s); see each portal's journal.")


def queue_stage_loads(request: HttpRequest, portal_ids: list[int]) -> None:
    staff_id = cast("User", request.user).pk
    for portal_id in portal_ids:
        dispatch_on_commit(load_stage_mapping, portal_id, staff_id)


class LoadStagesForm(forms.Form):
    portal = forms.ModelChoiceField(queryset=Portal.objects.filter(status=Portal.Status.ACTIVE).only("pk", "domain",
                                                                                                    "member_id"))


@admin.register(StageMapping)
class StageMappingAdmin(admin.ModelAdmin):
    list_display = ("portal", "external_stage", "status_id", "status_name", "sort", "loaded_at")
    list_display_links = ("status_id",)
    list_editable = ("external_stage",)
    list_filter = ("loaded_at",)
    list_select_related = ("portal",)
    search_fields = ("external_stage", "status_id", "portal__domain")
    raw_id_fields = ("portal",)
    ordering = ("portal_id", "sort", "external_stage")
    actions = ["reload"]
    change_list_template = "records/admin/stagemapping_change_list.html"

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view(self.load_view)
        return [path("load/", view, name="records_stagemapping_load"), *super().get_urls()]

    def load_view(self, request: HttpRequest) -> HttpResponse:
        """Load one portal's lead stages (crm.status.list) into its mapping."""
        form = LoadStagesForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            queue_stage_loads(request, [form.cleaned_data["portal"].pk])
            self.message_user(request, f"Loading the stages of {form.cleaned_data['portal']}.")
            return HttpResponseRedirect(reverse("admin:records_stagemapping_changelist"))
        context = {**self.admin_site.each_context(request), "title": _("Load stages"), "form": form,
                   "opts": self.model._meta}
        return TemplateResponse(request, "records/admin/load_stages.html", context)

    @admin.action(description=_("Load the stages of these rows' portals from Bitrix24 again"))
    def reload(self, request: HttpRequest, queryset: QuerySet[StageMapping]) -> None:
        portal_ids = sorted(set(queryset.values_list("portal_id", flat=True)))
        queue_stage_loads(request, portal_ids)
        self.message_user(request, f"Loading the stages of {len(portal_ids)} portal(s).")


@admin.register(Reply)
class ReplyAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "portal", "external_id", "kind", "target", "state", "attempts", "last_error_short",
                    "delivered_at")
    list_filter = ("state", "kind")
    list_select_related = ("portal", "record")
    search_fields = ("delivery_id",)
    search_help_text = _("Delivery id or job id (exact)")
    show_full_result_count = False
    ordering = ("-id",)
    actions = ["retry"]
    fields = ("portal", "job", "record", "kind", "target", "body", "delivery_id", "state", "attempts",
              "next_attempt_at", "claimed_at", "last_error", "created_at", "delivered_at")
    readonly_fields = fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Reply], search_term: str
                           ) -> tuple[QuerySet[Reply], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        if term.isdigit() and len(term) < 19:
            return queryset.filter(job_id=int(term)), False
        try:
            return queryset.filter(delivery_id=uuid.UUID(term)), False
        except ValueError:  # not a UUID
            return queryset.none(), False

    @admin.display(description=_("record"), ordering="record__external_id")
    def external_id(self, obj: Reply) -> str:
        return obj.record.external_id

    @admin.display(description=_("last error"))
    def last_error_short(self, obj: Reply) -> str | SafeString:
        return short(obj.last_error)

    @admin.action(description=_("Send again (failed replies)"))
    def retry(self, request: HttpRequest, queryset: QuerySet[Reply]) -> None:
        self.message_user(request, f"{do_retry_replies(queryset)} reply(ies) queued again")
