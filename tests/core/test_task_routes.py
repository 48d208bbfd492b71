"""Queues by urgency: every task of the project has a route by name, and each lands in its queue
(README "Workers and queues")."""

from __future__ import annotations

import pytest
from django.conf import settings

from b24portal.celery import app

PROJECT_APPS = ("b24portal.", "tenants.", "oauth.", "installs.", "messageservice.", "records.", "placements.")

EXPECTED = {
    # SMS: a customer waits.
    "messageservice.tasks.send_message": "sms",
    "messageservice.tasks.sweep_stale_claims": "sms",
    "messageservice.tasks.redispatch_lost_messages": "sms",
    # SMS statuses: Bitrix24 waits to hear "delivered"; never behind a send backlog (same SMS worker).
    "messageservice.delivery.dispatch_status_polls": "sms_status",
    "messageservice.delivery.poll_account": "sms_status",
    "messageservice.delivery.dispatch_status_pushes": "sms_status",
    "messageservice.delivery.push_portal_statuses": "sms_status",
    "messageservice.delivery.poll_accounts": "sms_status",
    "messageservice.delivery.push_statuses": "sms_status",
    # Lifecycle: an installer or a staff member waits.
    "tenants.tasks.run_install_steps": "lifecycle",
    "tenants.tasks.verify_portal": "lifecycle",
    "messageservice.tasks.sync_sender": "lifecycle",
    "placements.tasks.rebind_binding": "lifecycle",
    "placements.tasks.unbind_binding": "lifecycle",
    "placements.tasks.add_consent_fields": "lifecycle",
    "placements.tasks.add_timeline_comment": "lifecycle",
    "placements.tasks.send_timeline_comment": "lifecycle",
    "records.tasks.apply_portal_jobs": "lifecycle",
    "records.tasks.load_stage_mapping": "lifecycle",
    "records.replies.deliver_reply": "lifecycle",
    "placements.tasks.redispatch_timeline_comments": "maintenance",
    "records.tasks.redispatch_lost_jobs": "maintenance",
    "records.replies.redispatch_replies": "maintenance",
    "records.offline.poll_offline_events": "maintenance",
    "records.offline.poll_offline_events_chunk": "maintenance",
    "installs.tasks.redispatch_stuck_install_runs": "maintenance",
    # Maintenance: nobody waits.
    "messageservice.tasks.reconcile_all_senders": "maintenance",
    "messageservice.tasks.reconcile_portal_senders": "maintenance",
    "messageservice.tasks.reconcile_senders_chunk": "maintenance",
    "placements.tasks.reconcile_all_bindings": "maintenance",
    "placements.tasks.reconcile_portal_bindings": "maintenance",
    "placements.tasks.reconcile_bindings_chunk": "maintenance",
    "oauth.tasks.refresh_all_capabilities": "maintenance",
    "oauth.tasks.check_capabilities": "maintenance",
    "oauth.tasks.check_capabilities_chunk": "maintenance",
    "oauth.tasks.rollup_call_log": "maintenance",
    "oauth.tasks.prune_call_log": "maintenance",
    "oauth.tasks.keep_tokens_alive": "maintenance",
    "oauth.tasks.keep_tokens_alive_chunk": "maintenance",
    "oauth.tasks.expire_parked_calls": "maintenance",
    "oauth.tasks.redispatch_confirmed_calls": "maintenance",
    "oauth.confirmation.resume_parked_call": "lifecycle",
    "tenants.tasks.cleanup_stale_installs": "maintenance",
}


def queue_of(task_name: str) -> str:
    route = app.amqp.router.route({}, task_name)
    return route["queue"].name


def project_tasks() -> set[str]:
    app.loader.import_default_modules()
    return {name for name in app.tasks if name.startswith(PROJECT_APPS)}


@pytest.mark.parametrize(("task_name", "queue"), sorted(EXPECTED.items()))
def test_each_task_lands_in_its_queue(task_name: str, queue: str):
    assert task_name in project_tasks(), f"{task_name} is not a registered task"
    assert queue_of(task_name) == queue


def test_every_project_task_has_an_explicit_route_and_no_route_names_a_missing_task():
    tasks = project_tasks()
    assert tasks == set(EXPECTED), "route the new task in CELERY_TASK_ROUTES and list it here"
    assert set(settings.CELERY_TASK_ROUTES) == tasks


def test_every_periodic_task_runs_off_the_sms_queues_unless_it_serves_sms():
    sms_periodic = {"messageservice.tasks.sweep_stale_claims": "sms",
                    "messageservice.tasks.redispatch_lost_messages": "sms",
                    "messageservice.delivery.dispatch_status_polls": "sms_status",
                    "messageservice.delivery.dispatch_status_pushes": "sms_status"}
    periodic = {entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert set(sms_periodic) <= periodic
    for task_name in periodic:
        assert queue_of(task_name) == sms_periodic.get(task_name, "maintenance"), task_name


def test_status_work_and_only_status_work_has_its_own_queue_consumed_by_the_sms_worker():
    status_tasks = {name for name, queue in EXPECTED.items() if queue == "sms_status"}
    assert status_tasks == {name for name in project_tasks() if name.startswith("messageservice.delivery.")}
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    compose = (settings.BASE_DIR / "docker" / "docker-compose.yml").read_text()
    for text in (procfile, compose):
        assert "worker -Q sms,sms_status -n sms@%h " in text  # one SMS worker consumes both
        assert "sms_status" not in text.replace("-Q sms,sms_status ", "")  # and no other worker does


def test_an_unrouted_task_goes_to_the_default_queue_that_the_general_worker_consumes():
    assert queue_of("some.future.task") == settings.CELERY_TASK_DEFAULT_QUEUE == "lifecycle"
    procfile = (settings.BASE_DIR / "Procfile").read_text()
    assert "-Q sms,sms_status " in procfile and "-Q lifecycle,maintenance " in procfile
    compose = (settings.BASE_DIR / "docker" / "docker-compose.yml").read_text()
    assert "-Q sms,sms_status " in compose and "-Q lifecycle,maintenance " in compose
