"""Admin of the records sync: pages render without N+1, the key is shown once, actions do real work."""

from __future__ import annotations

from typing import Any

import pytest
from django.utils import timezone

from records.intake import do_accept_job
from records.keys import do_create_api_key
from records.models import ApiKey, Reply, StageMapping, SyncJob, hash_api_key
from records.replies import do_queue_replies
from tests.fakes import b24_crm

pytestmark = pytest.mark.django_db

FIELDS = {"full_name": "Иван Иванов", "phone": "+77001112233"}


@pytest.fixture
def rows(installed_portal: Any, django_capture_on_commit_callbacks: Any) -> Any:
    key, _ = do_create_api_key(installed_portal, name="billing", callback_url="https://hooks.example.com/x")
    with django_capture_on_commit_callbacks(execute=False):
        for n in range(12):
            job, _ = do_accept_job(installed_portal, action="create", external_id=str(n), fields=FIELDS, api_key=key)
            do_queue_replies(job, job.record, {"status": "success"})
    StageMapping.objects.create(portal=installed_portal, external_stage="NEW", status_id="NEW")
    SyncJob.objects.filter(pk__in=list(SyncJob.objects.values_list("pk", flat=True)[:4])).update(
        state=SyncJob.State.FAILED, last_error="ACCESS_DENIED: no", finished_at=timezone.now())
    return installed_portal


@pytest.mark.parametrize("url", ["/admin/records/syncjob/", "/admin/records/record/", "/admin/records/apikey/",
                                 "/admin/records/stagemapping/", "/admin/records/reply/",
                                 "/admin/records/syncjob/?state__exact=failed&q=3", "/admin/records/record/?q=5",
                                 "/admin/records/reply/?q=not-a-uuid", "/admin/records/stagemapping/load/"])
def test_admin_pages_render_with_a_bounded_number_of_queries(admin_client: Any, rows: Any, url: str,
                                                             django_assert_max_num_queries: Any):
    admin_client.get(url)  # warm the session and content-type caches
    with django_assert_max_num_queries(14):
        response = admin_client.get(url)
    assert response.status_code == 200


def test_the_jobs_list_shows_the_chart_of_jobs_per_day_by_outcome(admin_client: Any, rows: Any):
    page = admin_client.get("/admin/records/syncjob/").content.decode()
    assert "<svg" in page and "Records jobs per day by outcome" in page


def test_creating_a_key_shows_it_once_and_stores_only_its_hash(admin_client: Any, installed_portal: Any):
    response = admin_client.post("/admin/records/apikey/add/", {"portal": installed_portal.pk, "name": "crm",
                                                                "callback_url": ""})
    assert response.status_code == 200
    key = ApiKey.objects.get(name="crm")
    page = response.content.decode()
    shown = page.split('<code class="b24-secret">')[1].split("</code>")[0]
    assert shown.startswith("b24p_") and hash_api_key(shown) == key.key_hash
    assert "no-store" in response["Cache-Control"]
    change = admin_client.get(f"/admin/records/apikey/{key.pk}/change/").content.decode()
    assert shown not in change and key.callback_secret not in change


def test_the_revoke_action_revokes(admin_client: Any, rows: Any):
    key = ApiKey.objects.get()
    admin_client.post("/admin/records/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    key.refresh_from_db()
    assert key.revoked_at is not None


def test_retry_requeues_failed_jobs_and_applies_them(admin_client: Any, rows: Any, fake_portal: Any,
                                                     django_capture_on_commit_callbacks: Any):
    failed = list(SyncJob.objects.filter(state="failed").values_list("pk", flat=True))
    with django_capture_on_commit_callbacks(execute=True):
        admin_client.post("/admin/records/syncjob/", {"action": "retry", "_selected_action": failed})
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}  # the eager apply ran them all
    assert len(b24_crm.all_leads(fake_portal)) == 12


def test_cancel_cancels_pending_jobs_and_replies_with_an_error(admin_client: Any, rows: Any,
                                                               django_capture_on_commit_callbacks: Any):
    job = SyncJob.objects.filter(state="pending").first()
    with django_capture_on_commit_callbacks(execute=False):
        admin_client.post("/admin/records/syncjob/", {"action": "cancel", "_selected_action": [job.pk]})
    job.refresh_from_db()
    assert job.state == "cancelled"
    reply = Reply.objects.filter(job=job).latest("id")
    assert reply.body["status"] == "error" and reply.body["reason"] == "cancelled by staff"


def test_load_stages_fills_the_mapping_from_bitrix24(admin_client: Any, installed_portal: Any,
                                                     django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post("/admin/records/stagemapping/load/", {"portal": installed_portal.pk})
    assert response.status_code == 302
    assert list(StageMapping.objects.filter(portal=installed_portal).values_list("external_stage", "status_id")) == [
        (s, s) for s in ("NEW", "IN_PROCESS", "PROCESSED", "CONVERTED", "JUNK")]
