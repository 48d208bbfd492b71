"""Applying jobs to the fake portal's CRM: batching, order, coalescing, lost answers, faults, deadlines."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from oauth import ratelimit
from oauth.client import PortalClient
from oauth.models import PortalToken
from records import applying, tasks
from records.intake import do_accept_job
from records.models import Outcome, Record, StageMapping, SyncJob
from tests.fakes import b24_crm
from tests.fakes.bitrix24 import FakePortal

pytestmark = pytest.mark.django_db


def person(n: int) -> dict[str, Any]:
    return {"full_name": f"Иван Иванов {n}", "phone": f"+7700111{n:04d}", "stage": "NEW"}


def accept_quietly(capture: Any, portal: Any, *jobs: tuple[str, str, dict[str, Any]]) -> list[SyncJob]:
    """Store jobs without running the apply task their commit dispatches."""
    with capture(execute=False):
        return [do_accept_job(portal, action=action, external_id=ext, fields=fields)[0]
                for action, ext, fields in jobs]


def run_apply(portal: Any) -> None:
    tasks.apply_portal_jobs.apply(args=(portal.pk,))


def make_due(*extra: Any) -> None:
    """Time passes: every waiting job is due."""
    SyncJob.objects.filter(state=SyncJob.State.PENDING).update(next_attempt_at=timezone.now() - timedelta(seconds=1))


def http_batches(fake: FakePortal) -> int:
    return fake.count("batch", in_batch=False)


def leads_of(fake: FakePortal, external_id: str) -> list[dict[str, Any]]:
    return [lead for lead in b24_crm.all_leads(fake) if lead.get("ORIGIN_ID") == external_id]


def test_ten_creates_are_one_batch_request(installed_portal: Any, fake_portal: FakePortal,
                                           django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(10)])
    before = http_batches(fake_portal)
    run_apply(installed_portal)
    assert http_batches(fake_portal) - before == 1
    assert fake_portal.count("crm.lead.add", in_batch=True) == 10
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}
    for n in range(10):
        (lead,) = leads_of(fake_portal, str(n))
        assert lead["ORIGINATOR_ID"] == "b24portal"
        assert lead["PHONE"][0]["VALUE"] == f"+7700111{n:04d}" and lead["PHONE"][0]["VALUE_TYPE"] == "WORK"
        assert lead["NAME"] == "Иван" and lead["LAST_NAME"] == f"Иванов {n}"
        record = Record.objects.get(external_id=str(n))
        assert record.lead_id == int(lead["ID"]) and record.last_outcome == Outcome.SUCCESS


def test_an_update_waits_for_its_create_and_consecutive_updates_coalesce(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   ("create", "7", person(7)),
                   ("update", "7", {"full_name": "Иван Петров"}),
                   ("update", "7", {"comment": "called back", "full_name": "Иван Сидоров"}),
                   ("move", "7", {"stage": "CONVERTED"}))
    run_apply(installed_portal)
    assert fake_portal.count("crm.lead.add", in_batch=True) == 1
    assert fake_portal.count("crm.lead.update", in_batch=True) == 1  # three jobs, one call
    (lead,) = leads_of(fake_portal, "7")
    assert (lead["TITLE"], lead["COMMENTS"], lead["STATUS_ID"]) == ("Иван Сидоров", "called back", "CONVERTED")
    assert list(SyncJob.objects.order_by("id").values_list("state", flat=True)) == ["succeeded"] * 4
    assert set(SyncJob.objects.values_list("lead_id", flat=True)) == {int(lead["ID"])}
    assert Record.objects.get(external_id="7").stage == "CONVERTED"


def test_records_keep_their_order_when_one_waits_for_a_retry(installed_portal: Any, fake_portal: FakePortal,
                                                            django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)),
                   ("create", "2", person(2)))
    fake_portal.fail_next("crm.lead.add", "QUERY_LIMIT_EXCEEDED", "Too many requests", http_status=503)
    run_apply(installed_portal)  # record 1's add is refused inside the batch, record 2's succeeds
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("move", "1", {"stage": "JUNK"}))
    run_apply(installed_portal)  # record 1 still waits for its retry: its move must not go first
    assert fake_portal.count("crm.lead.update", in_batch=True) == 0
    make_due()
    run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert lead["STATUS_ID"] == "JUNK"
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}


def test_a_create_whose_answer_was_lost_is_found_by_origin_id_not_added_twice(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(10)])
    b24_crm.lose_answers(fake_portal, times=1, method="batch")
    run_apply(installed_portal)
    assert len(b24_crm.all_leads(fake_portal)) == 10  # done in Bitrix24, the answer lost
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"pending"}
    make_due()
    run_apply(installed_portal)
    assert fake_portal.count("crm.lead.list", in_batch=True) == 10
    assert fake_portal.count("crm.lead.add", in_batch=True) == 10  # none added twice
    for n in range(10):
        (lead,) = leads_of(fake_portal, str(n))
        job = SyncJob.objects.get(record__external_id=str(n))
        assert job.state == "succeeded" and job.lead_id == int(lead["ID"]) and job.attempts == 2


def test_503s_in_the_middle_of_a_batch_leave_every_record_with_exactly_one_lead(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(10)])
    fake_portal.fail_next("crm.lead.add", "QUERY_LIMIT_EXCEEDED", "Too many requests", http_status=503, times=4)
    run_apply(installed_portal)
    assert SyncJob.objects.filter(state="pending").count() == 4
    make_due()
    run_apply(installed_portal)
    for n in range(10):
        assert len(leads_of(fake_portal, str(n))) == 1
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}


def test_a_timeout_after_bitrix24_acted_leaves_exactly_one_lead(
        settings: Any, installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(5)])
    settings.B24_HTTP_TIMEOUT = (2.0, 0.2)
    fake_portal.set_latency("batch", 0.5)  # answers after we gave up; the adds still happen
    run_apply(installed_portal)
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"pending"}
    assert "TRANSPORT_ERROR" in SyncJob.objects.first().last_error
    fake_portal.set_latency("batch", 0)
    deadline = timezone.now() + timedelta(seconds=10)
    while len(b24_crm.all_leads(fake_portal)) < 5 and timezone.now() < deadline:
        time.sleep(0.01)  # the fake's server thread finishes the batch we stopped waiting for
    settings.B24_HTTP_TIMEOUT = (5.0, 60.0)
    make_due()
    run_apply(installed_portal)
    for n in range(5):
        assert len(leads_of(fake_portal, str(n))) == 1
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}


class WorkerKilled(BaseException):
    """What a SIGKILL looks like from inside: nothing after it runs."""


def test_a_worker_killed_mid_batch_leaves_no_duplicate_lead(monkeypatch: Any, installed_portal: Any,
                                                          fake_portal: FakePortal,
                                                          django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(3)])
    real_batch = PortalClient.batch

    def batch_then_die(self: PortalClient, *args: Any, **kwargs: Any) -> Any:
        real_batch(self, *args, **kwargs)
        raise WorkerKilled

    monkeypatch.setattr(PortalClient, "batch", batch_then_die)
    with pytest.raises(WorkerKilled):
        run_apply(installed_portal)
    monkeypatch.setattr(PortalClient, "batch", real_batch)
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"running"}
    run_apply(installed_portal)  # a duplicate task: the claims are still held, nothing is sent twice
    assert fake_portal.count("crm.lead.add", in_batch=True) == 3
    SyncJob.objects.update(claimed_at=timezone.now() - timedelta(hours=1))  # the claim timeout passes
    with django_capture_on_commit_callbacks(execute=True):
        tasks.redispatch_lost_jobs.apply()
    make_due()
    run_apply(installed_portal)
    assert fake_portal.count("crm.lead.add", in_batch=True) == 3
    for n in range(3):
        assert len(leads_of(fake_portal, str(n))) == 1
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}


def test_a_permanent_error_fails_the_job_with_bitrix24s_reason(installed_portal: Any, fake_portal: FakePortal,
                                                               django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    run_apply(installed_portal)
    lead_id = Record.objects.get().lead_id
    with fake_portal.lock:
        b24_crm.leads(fake_portal).pop(lead_id)  # someone deleted the lead in Bitrix24
    (job,) = accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                            ("update", "1", {"full_name": "Иван Петров"}))
    run_apply(installed_portal)
    job.refresh_from_db()
    assert job.state == "failed" and "Not found" in job.last_error and job.attempts == 1
    record = Record.objects.get()
    assert record.last_outcome == Outcome.ERROR and "Not found" in record.last_error


def test_an_unknown_status_without_a_mapping_fails_with_the_reason(installed_portal: Any, fake_portal: FakePortal,
                                                                    django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", {**person(1),
                                                                                         "stage": "NOPE"}))
    run_apply(installed_portal)
    job = SyncJob.objects.get()
    assert job.state == "failed" and "Status not found" in job.last_error


def test_transient_errors_retry_until_the_deadline_then_fail(installed_portal: Any, fake_portal: FakePortal,
                                                             django_capture_on_commit_callbacks: Any):
    (job,) = accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    fake_portal.fail_next("crm.lead.add", "QUERY_LIMIT_EXCEEDED", "Too many requests", http_status=503, times=2)
    run_apply(installed_portal)
    job.refresh_from_db()
    assert job.state == "pending" and job.next_attempt_at > timezone.now()
    SyncJob.objects.update(deadline=timezone.now() - timedelta(seconds=1))
    make_due()
    run_apply(installed_portal)
    job.refresh_from_db()
    assert job.state == "failed" and job.last_error.startswith("gave up at the deadline: QUERY_LIMIT_EXCEEDED")
    assert not b24_crm.all_leads(fake_portal)


def test_an_update_of_a_record_whose_create_failed_fails_without_a_call(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   ("create", "1", {**person(1), "stage": "NOPE"}), ("update", "1", {"full_name": "X"}))
    run_apply(installed_portal)
    update = SyncJob.objects.get(action="update")
    assert update.state == "failed" and "no Bitrix24 lead" in update.last_error
    assert fake_portal.count("crm.lead.update") == 0


def test_the_apply_task_is_queued_once_for_many_jobs(installed_portal: Any, monkeypatch: Any,
                                                     django_capture_on_commit_callbacks: Any):
    published: list[int] = []
    monkeypatch.setattr(tasks, "publish", lambda task, portal_id: published.append(portal_id))
    with django_capture_on_commit_callbacks(execute=True):
        for n in range(5):
            do_accept_job(installed_portal, action="create", external_id=str(n), fields=person(n))
    assert published == [installed_portal.pk]


def test_claims_take_at_most_fifty_records_per_batch(installed_portal: Any, fake_portal: FakePortal,
                                                     django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(60)])
    groups = applying.claim_groups(installed_portal, timezone.now())
    assert len(groups) == 50
    assert SyncJob.objects.filter(state="running").count() == 50


def test_external_stages_are_written_as_their_mapped_status(installed_portal: Any, fake_portal: FakePortal,
                                                            django_capture_on_commit_callbacks: Any):
    tasks.load_stage_mapping.apply(args=(installed_portal.pk,))
    StageMapping.objects.filter(portal=installed_portal, status_id="IN_PROCESS").update(external_stage="calling")
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   ("create", "1", {**person(1), "stage": "calling"}))
    run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert lead["STATUS_ID"] == "IN_PROCESS"
    assert Record.objects.get().stage == "calling"


def test_loading_stages_again_follows_bitrix24_and_keeps_renamed_rows(installed_portal: Any,
                                                                      fake_portal: FakePortal):
    tasks.load_stage_mapping.apply(args=(installed_portal.pk,))
    StageMapping.objects.filter(status_id="NEW").update(external_stage="fresh")
    b24_crm.set_lead_stages(fake_portal, [("NEW", "New one"), ("HOT", "Hot")])
    tasks.load_stage_mapping.apply(args=(installed_portal.pk,))
    rows = list(StageMapping.objects.filter(portal=installed_portal).values_list("external_stage", "status_id",
                                                                                 "status_name"))
    assert rows == [("fresh", "NEW", "New one"), ("HOT", "HOT", "Hot")]


def test_an_unexpected_error_keeps_the_jobs_owed_not_stuck_running(monkeypatch: Any, installed_portal: Any,
                                                                   django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))

    def broken(self: PortalClient, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database hiccup")

    monkeypatch.setattr(PortalClient, "batch", broken)
    run_apply(installed_portal)
    job = SyncJob.objects.get()
    assert job.state == "pending" and "RuntimeError: database hiccup" in job.last_error


def test_a_portal_without_a_service_token_fails_its_jobs_with_the_reason(installed_portal: Any,
                                                                         django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    PortalToken.objects.filter(portal=installed_portal).delete()
    run_apply(installed_portal)
    job = SyncJob.objects.get()
    assert job.state == "failed" and "NO_SERVICE_TOKEN" in job.last_error


def test_a_full_limiter_puts_the_jobs_back_without_counting_an_attempt(installed_portal: Any,
                                                                       fake_portal: FakePortal,
                                                                       django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   *[("create", str(n), person(n)) for n in range(3)])
    ratelimit.penalize(installed_portal, 600)  # the portal's shared bucket is full for ten minutes
    before = fake_portal.count(in_batch=False)
    run_apply(installed_portal)
    assert fake_portal.count(in_batch=False) == before  # nothing was sent
    for job in SyncJob.objects.all():
        assert job.state == "pending" and job.attempts == 0 and "RATE_LIMIT_WAIT" in job.last_error
        assert job.next_attempt_at > timezone.now() + timedelta(minutes=5)


def values(lead: dict[str, Any], name: str) -> list[str]:
    return [item["VALUE"] for item in lead.get(name) or []]


def add_by_hand(fake: FakePortal, external_id: str, name: str, value: str) -> None:
    """A person adds a value to the lead's multi-field in Bitrix24."""
    with fake.lock:
        (lead,) = [row for row in b24_crm.leads(fake).values() if row.get("ORIGIN_ID") == external_id]
        lead[name] = [*lead.get(name, []), {"ID": str(b24_crm._next_id(fake)), "VALUE": value,
                                            "VALUE_TYPE": "MOBILE", "TYPE_ID": name}]


def test_changing_a_phone_replaces_our_value_and_keeps_one_added_by_hand(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    run_apply(installed_portal)
    (before,) = leads_of(fake_portal, "1")
    add_by_hand(fake_portal, "1", "PHONE", "+77005554433")
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("update", "1", {"phone": "+77009998877"}))
    run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert values(lead, "PHONE") == ["+77009998877", "+77005554433"]
    assert lead["PHONE"][0]["ID"] == before["PHONE"][0]["ID"]  # changed in place, by its ID
    assert fake_portal.count("crm.lead.get", in_batch=True) == 1
    assert Record.objects.get().own_multifields["PHONE"] == {"value": "+77009998877",
                                                             "id": before["PHONE"][0]["ID"]}
    assert set(SyncJob.objects.values_list("state", flat=True)) == {"succeeded"}


def test_a_repeated_phone_change_keeps_one_copy(installed_portal: Any, fake_portal: FakePortal,
                                                 django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    run_apply(installed_portal)
    for _ in range(2):
        accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                       ("update", "1", {"phone": "+77009998877"}))
        run_apply(installed_portal)
    Record.objects.update(last_written={})  # even when the last write is not known (e.g. a lost answer)
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("update", "1", {"phone": "+77009998877"}))
    run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert values(lead, "PHONE") == ["+77009998877"]


def test_changing_an_email_replaces_our_value_and_keeps_one_added_by_hand(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                   ("create", "1", {**person(1), "email": "ivan@example.com"}))
    run_apply(installed_portal)
    add_by_hand(fake_portal, "1", "EMAIL", "home@example.com")
    for _ in range(2):
        accept_quietly(django_capture_on_commit_callbacks, installed_portal,
                       ("update", "1", {"email": "ivan.new@example.com"}))
        run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert values(lead, "EMAIL") == ["ivan.new@example.com", "home@example.com"]
    assert values(lead, "PHONE") == ["+77001110001"]  # an email change leaves the phone alone


def test_a_new_phone_is_added_when_a_person_deleted_ours(installed_portal: Any, fake_portal: FakePortal,
                                                         django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    run_apply(installed_portal)
    with fake_portal.lock:
        (row,) = b24_crm.leads(fake_portal).values()
        row["PHONE"] = []
    add_by_hand(fake_portal, "1", "PHONE", "+77005554433")
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("update", "1", {"phone": "+77009998877"}))
    run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert values(lead, "PHONE") == ["+77005554433", "+77009998877"]
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("update", "1", {"phone": "+77001112200"}))
    run_apply(installed_portal)  # the value we added is ours: the next change replaces it
    (lead,) = leads_of(fake_portal, "1")
    assert values(lead, "PHONE") == ["+77005554433", "+77001112200"]


def test_an_update_without_a_phone_or_email_does_not_read_the_lead(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)),
                   ("update", "1", {"comment": "called back"}))
    run_apply(installed_portal)
    assert fake_portal.count("crm.lead.get", in_batch=True) == 0


def test_a_record_synced_before_its_values_were_kept_has_its_phone_replaced_too(
        installed_portal: Any, fake_portal: FakePortal, django_capture_on_commit_callbacks: Any):
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("create", "1", person(1)))
    run_apply(installed_portal)
    Record.objects.update(own_multifields={})  # as the migration leaves existing records
    add_by_hand(fake_portal, "1", "PHONE", "+77005554433")
    accept_quietly(django_capture_on_commit_callbacks, installed_portal, ("update", "1", {"phone": "+77009998877"}))
    run_apply(installed_portal)
    (lead,) = leads_of(fake_portal, "1")
    assert values(lead, "PHONE") == ["+77009998877", "+77005554433"]
