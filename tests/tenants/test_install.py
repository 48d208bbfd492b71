"""Install: the UI install frame and the ONAPPINSTALL event, against the fake portal over real HTTP."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import urlencode

import pytest
import responses
from django.db import connection
from django.utils import timezone

from installs.runs import do_cleanup_stale_installs
from installs.steps import APP_EVENTS
from oauth.models import PortalToken
from tenants.models import InstallRun, JournalEntry, Portal
from tests.conftest import post_event, post_install_frame

pytestmark = pytest.mark.django_db

EVENTS_URL = "https://app.b24portal.test/b24/events/"


def bound_events(fake_portal) -> set[str]:
    return {b.event for b in fake_portal.event_bindings if b.handler == EVENTS_URL}


def test_it_installs_from_the_install_frame(client, fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_install_frame(client, fake_portal)

    assert response.status_code == 200
    portal = Portal.objects.get(member_id=fake_portal.member_id)
    assert portal.status == Portal.Status.ACTIVE
    assert portal.domain == fake_portal.domain
    assert portal.rest_endpoint == fake_portal.client_endpoint
    assert portal.app_local_id == fake_portal.app_id
    assert portal.application_token_matches(fake_portal.application_token)
    assert portal.installed_at is not None and portal.installed_by_user_id == 1
    assert bound_events(fake_portal) == set(APP_EVENTS)
    run = portal.install_runs.get()
    assert run.status == InstallRun.Status.SUCCEEDED
    assert set(run.steps.values_list("status", flat=True)) == {"succeeded"}
    # The page polls its run and finishes the install through BX24 only after the steps succeeded.
    body = response.content.decode()
    assert str(run.public_id) in body and "BX24.installFinish()" in body


def test_the_install_page_may_be_framed_by_that_portal_only(client, fake_portal):
    response = post_install_frame(client, fake_portal)

    assert response["Content-Security-Policy"] == f"frame-ancestors http://{fake_portal.domain}"
    assert "X-Frame-Options" not in response
    assert client.get("/health/")["X-Frame-Options"] == "DENY"


def test_it_stores_the_installers_tokens_encrypted(client, fake_portal):
    post_install_frame(client, fake_portal)
    token = PortalToken.objects.get(portal__member_id=fake_portal.member_id)

    assert token.is_service and token.user_id == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT access_token, refresh_token FROM oauth_portaltoken WHERE id = %s", [token.pk])
        raw_access, raw_refresh = cursor.fetchone()
    assert raw_access.startswith("fernet:") and token.access_token not in raw_access
    assert raw_refresh.startswith("fernet:") and token.refresh_token not in raw_refresh


def test_it_installs_from_the_onappinstall_event(client, fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_event(client, fake_portal.onappinstall(), url="/b24/install/")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert b"installFinish" not in response.content
    portal = Portal.objects.get(member_id=fake_portal.member_id)
    assert portal.status == Portal.Status.ACTIVE
    assert portal.application_token_matches(fake_portal.application_token)
    assert bound_events(fake_portal) == set(APP_EVENTS)


def test_reposting_the_same_install_is_idempotent(client, fake_portal, django_capture_on_commit_callbacks):
    query, form = fake_portal.install_frame()
    url = f"/b24/install/?{urlencode(query)}"
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(url, data=form)
    with django_capture_on_commit_callbacks(execute=True):
        second = client.post(url, data=form)

    assert first.status_code == second.status_code == 200
    assert Portal.objects.filter(member_id=fake_portal.member_id).count() == 1
    assert InstallRun.objects.filter(portal__member_id=fake_portal.member_id).count() == 1
    assert PortalToken.objects.filter(portal__member_id=fake_portal.member_id).count() == 1
    assert fake_portal.count("event.bind") == len(APP_EVENTS)


def test_it_refuses_a_domain_outside_the_allow_list_without_calling_it(client, fake_portal):
    query, form = fake_portal.install_frame()
    query["DOMAIN"] = "evil.example.com"
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mocked:
        response = client.post(f"/b24/install/?{urlencode(query)}", data=form)
        assert len(mocked.calls) == 0

    assert response.status_code == 403
    assert "not allowed" in response.json()["error"]
    assert not Portal.objects.exists()


def test_it_refuses_a_forged_token(client, fake_portal):
    query, form = fake_portal.install_frame()
    form["AUTH_ID"] = "f" * 64

    response = client.post(f"/b24/install/?{urlencode(query)}", data=form)

    assert response.status_code == 403
    assert "rejected the token" in response.json()["error"]
    assert not Portal.objects.exists() and not PortalToken.objects.exists()


def test_it_refuses_a_member_id_that_belongs_to_another_domain(client, b24_cloud, fake_portal):
    post_install_frame(client, fake_portal)
    other = b24_cloud.create_portal()
    query, form = other.install_frame()
    form["member_id"] = fake_portal.member_id

    response = client.post(f"/b24/install/?{urlencode(query)}", data=form)

    # The OAuth server says whose token it is: not that member_id's (a 403 since the trust rules).
    assert response.status_code == 403
    assert "another portal" in response.json()["error"]
    assert Portal.objects.get(member_id=fake_portal.member_id).domain == fake_portal.domain


def test_a_failed_step_shows_on_the_page_and_can_be_retried(client, fake_portal, django_capture_on_commit_callbacks):
    fake_portal.fail_next("event.get", "ACCESS_DENIED", "Access denied!", 403)
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)
    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    state = client.get(f"/b24/install/runs/{run.public_id}/").json()

    assert state["status"] == "failed"
    step = next(step for step in state["steps"] if step["name"] == "app_events")
    assert step["status"] == "failed" and "ACCESS_DENIED" in step["message"]
    assert Portal.objects.get(pk=run.portal_id).status == Portal.Status.NEW

    with django_capture_on_commit_callbacks(execute=True):
        retried = client.post(f"/b24/install/runs/{run.public_id}/retry/")
    assert retried.status_code == 200
    assert client.get(f"/b24/install/runs/{run.public_id}/").json()["status"] == "succeeded"
    assert Portal.objects.get(pk=run.portal_id).status == Portal.Status.ACTIVE


def test_a_rate_limited_step_is_retried_later_not_failed(client, fake_portal, django_capture_on_commit_callbacks,
                                                         settings, limiter_clock, monkeypatch):
    from celery.exceptions import Retry

    from installs.tasks import run_install_steps

    # The service's limiter runs on a frozen clock; a wait for a permit passes that time on it at once.
    monkeypatch.setattr(limiter_clock, "sleep", limiter_clock.advance)
    settings.B24_RATE_TASK_MAX_WAIT = 0  # any wait is "too long" here: the task must not sleep for it
    fake_portal.fail_next("event.get", "QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
    with pytest.raises(Retry) as retry, django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)  # the task asks Celery to run it again later
    assert 0 < float(retry.value.when) <= 120

    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    step = run.steps.get(name="app_events")
    assert run.status == InstallRun.Status.RUNNING
    assert step.status == "pending" and "QUERY_LIMIT_EXCEEDED" in step.message

    limiter_clock.advance(float(retry.value.when))  # the countdown the worker would wait (the limiter backed off)
    settings.B24_RATE_TASK_MAX_WAIT = 2.0
    run_install_steps.apply(args=[run.pk])  # the retry, as the worker would run it
    run.refresh_from_db()
    assert run.status == InstallRun.Status.SUCCEEDED
    assert run.steps.get(name="app_events").attempts == 2


def test_reinstall_of_an_uninstalled_portal_starts_cleanly(client, fake_portal, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)
    post_event(client, fake_portal.onappuninstall(clean=True))
    portal = Portal.objects.get(member_id=fake_portal.member_id)
    assert portal.status == Portal.Status.DELETED

    fake_portal.reinstall()  # the admin installs the app again: new tokens, new application token
    with django_capture_on_commit_callbacks(execute=True):
        response = post_install_frame(client, fake_portal)

    assert response.status_code == 200
    portal.refresh_from_db()
    assert portal.status == Portal.Status.ACTIVE and portal.uninstalled_at is None
    assert portal.install_runs.count() == 2
    assert portal.application_token_matches(fake_portal.application_token)
    messages = list(portal.journal.values_list("message", flat=True))
    assert any("reinstall started" in m for m in messages) and any("uninstalled" in m for m in messages)


def test_an_install_that_never_finishes_is_cleaned_up(client, fake_portal, settings,
                                                      django_capture_on_commit_callbacks):
    fake_portal.fail_next("event.get", "ACCESS_DENIED", "Access denied!", 403)
    with django_capture_on_commit_callbacks(execute=True):
        post_install_frame(client, fake_portal)  # a step fails and nobody retries it
    portal = Portal.objects.get(member_id=fake_portal.member_id)
    assert portal.status == Portal.Status.NEW

    later = timezone.now() + timedelta(minutes=settings.B24_INSTALL_TIMEOUT_MINUTES + 1)
    assert do_cleanup_stale_installs(now=later) == 1

    portal.refresh_from_db()
    assert portal.status == Portal.Status.DELETED
    assert not portal.tokens.exists()
    assert portal.journal.filter(kind=JournalEntry.Kind.LIFECYCLE, message__contains="never finished").exists()


def test_a_fresh_install_is_not_cleaned_up(client, fake_portal):
    post_install_frame(client, fake_portal)
    assert do_cleanup_stale_installs() == 0
    assert Portal.objects.get(member_id=fake_portal.member_id).status == Portal.Status.NEW


def test_the_run_status_of_an_unknown_run_is_404(client):
    response = client.get("/b24/install/runs/00000000-0000-4000-8000-000000000000/")
    assert response.status_code == 404


def test_an_enterprise_portal_gets_the_enterprise_rate_plan(client, b24_cloud):
    enterprise = b24_cloud.create_portal(license="en_ent250", enterprise=True)
    post_install_frame(client, enterprise)
    portal = Portal.objects.get(member_id=enterprise.member_id)
    assert portal.license_family == "ent"
    assert portal.rest_rate_limit == (5.0, 250)


def test_the_installer_is_recorded(client, fake_portal):
    post_install_frame(client, fake_portal, user_id=7)
    portal = Portal.objects.get(member_id=fake_portal.member_id)
    assert portal.installed_by_user_id == 7
    assert re.match(r"\S", portal.installed_by_name)


def test_a_pending_run_whose_task_was_lost_is_dispatched_again_by_retry_and_by_reposting(
        client, fake_portal, django_capture_on_commit_callbacks):
    post_install_frame(client, fake_portal)  # on_commit not run: as if the broker lost the dispatch
    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    assert client.post(f"/b24/install/runs/{run.public_id}/retry/").status_code == 409  # within the grace

    InstallRun.objects.filter(pk=run.pk).update(progress_at=timezone.now() - timedelta(hours=1))
    with django_capture_on_commit_callbacks(execute=True):
        retried = client.post(f"/b24/install/runs/{run.public_id}/retry/")
    assert retried.status_code == 200
    assert client.get(f"/b24/install/runs/{run.public_id}/").json()["status"] == "succeeded"


def test_reposting_the_install_dispatches_a_run_whose_task_was_lost(client, fake_portal,
                                                                    django_capture_on_commit_callbacks):
    post_install_frame(client, fake_portal)  # the dispatch was lost
    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    InstallRun.objects.filter(pk=run.pk).update(progress_at=timezone.now() - timedelta(hours=1))

    with django_capture_on_commit_callbacks(execute=True):
        assert post_install_frame(client, fake_portal).status_code == 200

    assert InstallRun.objects.get().pk == run.pk  # the same run, not a second one
    run.refresh_from_db()
    assert run.status == InstallRun.Status.SUCCEEDED
    assert Portal.objects.get(pk=run.portal_id).status == Portal.Status.ACTIVE
