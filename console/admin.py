"""django-celery-beat's periodic tasks, readable: each says what it does (the description given to
`b24portal.celery.add_periodic`); the schedule of a task the code registers is read-only (beat writes it
back from the code and settings on every start), and only the ones marked `staff_may_pause` can be paused."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django_celery_beat.admin import PeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from b24portal.celery import PERIODIC

admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class ReadablePeriodicTaskAdmin(PeriodicTaskAdmin):
    list_display = ("name", "what_it_does", "enabled", "interval", "last_run_at", "who_may_change")
    actions = ("enable_tasks", "disable_tasks", "run_tasks")

    @admin.display(description="what it does")
    def what_it_does(self, obj: PeriodicTask) -> str:
        known = PERIODIC.get(obj.name)
        return known.description if known else (obj.description or "—")

    @admin.display(description="staff may")
    def who_may_change(self, obj: PeriodicTask) -> str:
        known = PERIODIC.get(obj.name)
        if known is None:
            return "edit (added by staff)"
        return "pause (schedule set by the code)" if known.staff_may_pause else "nothing: must keep running"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is None or obj.name not in PERIODIC:
            return super().get_readonly_fields(request, obj)
        model_fields = {f.name for f in PeriodicTask._meta.get_fields()}
        every = [f for fieldset in self.get_fieldsets(request, obj) for f in fieldset[1]["fields"]
                 if f in model_fields or f in self.readonly_fields]
        editable = {"enabled"} if PERIODIC[obj.name].staff_may_pause else set()
        return [f for f in every if f not in editable]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        fieldsets = super().get_fieldsets(request, obj)
        if obj is None or obj.name not in PERIODIC:
            return fieldsets
        # "regtask" is a form-only chooser of the task: meaningless on a read-only entry
        return [(title, {**opts, "fields": [f for f in opts["fields"] if f != "regtask"]})
                for title, opts in fieldsets]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.name in PERIODIC:
            return False
        return super().has_delete_permission(request, obj)

    def _pausable(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> QuerySet[PeriodicTask]:
        fixed = [name for name, p in PERIODIC.items() if not p.staff_may_pause]
        refused = list(queryset.filter(name__in=fixed).values_list("name", flat=True))
        if refused:
            self.message_user(request, f"Not changed (must keep running): {', '.join(refused)}", messages.WARNING)
        return queryset.exclude(name__in=fixed)

    @admin.action(description="Enable selected tasks")
    def enable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().enable_tasks(request, self._pausable(request, queryset))

    @admin.action(description="Disable selected tasks")
    def disable_tasks(self, request: HttpRequest, queryset: QuerySet[PeriodicTask]) -> None:
        super().disable_tasks(request, self._pausable(request, queryset))
