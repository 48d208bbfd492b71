"""The records API card on the cabinet's administrators' page: the portal's API keys and its recent sync jobs.

The cabinet (top floor) may read records, which sits below placements; it plugs this card into the page
through placements.extensions like any sibling app would, in its AppConfig.ready()."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.urls import reverse

from placements.extensions import PageAddon
from records.jobs import job_state_counts, jobs_for
from records.keys import api_keys_for
from records.models import SyncJob

if TYPE_CHECKING:
    from placements.frames import FramePrincipal

RECENT_JOBS_ON_CARD = 10


def records_section(principal: FramePrincipal) -> PageAddon | None:
    """Asked only for a proven administrator (the page checks it first). Three queries: keys, jobs, counts."""
    portal = principal.portal
    counts = job_state_counts(portal)
    return PageAddon("cabinet/_records.html", {
        "keys": list(api_keys_for(portal)),
        "jobs": list(jobs_for(portal)[:RECENT_JOBS_ON_CARD]),
        "state_counts": [{"state": state, "label": label, "count": counts[state]}
                         for state, label in SyncJob.State.choices],
        "keys_url": reverse("cabinet-api-keys"), "jobs_url": reverse("cabinet-sync-jobs"),
    })
