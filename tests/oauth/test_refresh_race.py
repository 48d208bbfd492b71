"""16 processes hit one expired token at the same moment: exactly one OAuth call, no failure.

Real processes (spawn), real PostgreSQL row locks, the fake OAuth server over HTTP with latency so the
processes really overlap."""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from oauth.models import PortalToken

from .refresh_procs import call_app_info

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

PROCESSES = 16


def race(portal, b24_cloud) -> Counter:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results = context.Queue()
    env = {
        "PROJECT_ROOT": str(settings.BASE_DIR),
        "RACE_DATABASE_NAME": connection.settings_dict["NAME"],
        "RACE_OAUTH_URL": b24_cloud.oauth_url,
        "RACE_SERVER_ENDPOINT": b24_cloud.server_endpoint,
        "TEST_DATABASE_URL": os.environ["DATABASE_URL"],
    }
    processes = [context.Process(target=call_app_info, args=(portal.pk, barrier, results, env))
                 for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    outcomes = Counter(results.get(timeout=120)[0] for _ in processes)
    for process in processes:
        process.join(timeout=30)
    return outcomes


@pytest.fixture
def slow_oauth(b24_cloud):
    b24_cloud.set_oauth_latency(0.3)  # keeps the first refresh in flight while the others arrive
    yield
    b24_cloud.set_oauth_latency(0)


def test_sixteen_processes_on_an_expired_token_make_one_oauth_call(installed_portal, b24_cloud, slow_oauth):
    PortalToken.objects.filter(portal=installed_portal).update(expires_at=timezone.now() - timedelta(seconds=5))
    before = b24_cloud.oauth_count("refresh_token")

    outcomes = race(installed_portal, b24_cloud)

    assert outcomes == Counter({"ok": PROCESSES})
    assert b24_cloud.oauth_count("refresh_token") - before == 1


def test_sixteen_processes_meeting_401_expired_token_make_one_oauth_call(
    installed_portal, fake_portal, b24_cloud, slow_oauth
):
    fake_portal.expire_access_tokens()  # our row still looks valid: every process learns it from a 401
    before = b24_cloud.oauth_count("refresh_token")

    outcomes = race(installed_portal, b24_cloud)

    assert outcomes == Counter({"ok": PROCESSES})
    assert b24_cloud.oauth_count("refresh_token") - before == 1
