"""Reading a portal's sync jobs (the cabinet's administrators' page): the newest jobs with their record, and
how many are in each state."""

from __future__ import annotations

from django.db.models import Count, QuerySet

from tenants.models import Portal

from .models import SyncJob


def jobs_for(portal: Portal, *, state: str = "") -> QuerySet[SyncJob]:
    """The portal's jobs, newest first, with their record (one query per page); `state` narrows them when it
    is one of SyncJob.State (anything else is ignored)."""
    jobs = SyncJob.objects.filter(portal=portal).select_related("record").order_by("-id")
    if state in SyncJob.State.values:
        jobs = jobs.filter(state=state)
    return jobs


def job_state_counts(portal: Portal) -> dict[str, int]:
    """Every state of SyncJob.State (in its order) and how many of the portal's jobs are in it; one query."""
    found = dict(SyncJob.objects.filter(portal=portal).order_by().values_list("state").annotate(n=Count("id")))
    return {state: found.get(state, 0) for state in SyncJob.State.values}
