"""The install flow through a real Celery worker consuming from Redis (not eager mode)."""

from __future__ import annotations

import pytest
from celery.contrib.testing.worker import start_worker

from b24portal.celery import app
from tenants.models import InstallRun, Portal
from tests.conftest import post_install_frame
from tests.waiting import wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def real_worker(settings):
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        with start_worker(app, pool="threads", concurrency=2, perform_ping_check=False, loglevel="WARNING",
                          shutdown_timeout=10):
            yield
    finally:
        app.conf.task_always_eager = True



def test_a_worker_runs_the_install_steps_dispatched_on_commit(real_worker, client, fake_portal):
    response = post_install_frame(client, fake_portal)
    assert response.status_code == 200

    run = InstallRun.objects.get(portal__member_id=fake_portal.member_id)
    assert wait_for(lambda: InstallRun.objects.get(pk=run.pk).status == InstallRun.Status.SUCCEEDED)
    assert Portal.objects.get(pk=run.portal_id).status == Portal.Status.ACTIVE
    assert fake_portal.count("event.bind") >= 1
