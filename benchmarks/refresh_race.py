"""Benchmark 1: 16 processes on one expired token against the fake OAuth server.

Prints OAuth calls made (target 1) and failed calls (target 0) for our locked refresh, beside a naive
baseline in the same run where every process refreshes on its own (what the public clients do).

    make bench BENCH_ARGS="refresh_race"          # or: .venv/bin/python -m benchmarks refresh_race --processes 16
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from benchmarks.common import ROOT, scratch_database, setup_django


def _child_setup(env: dict[str, str]) -> None:
    os.environ.update(env)
    setup_django()
    from django.conf import settings

    settings.DATABASES["default"]["NAME"] = env["BENCH_DATABASE_NAME"]
    from django.db import connections

    connections["default"].settings_dict["NAME"] = env["BENCH_DATABASE_NAME"]
    settings.B24_OAUTH_URL = env["BENCH_OAUTH_URL"]


def locked_worker(portal_id: int, barrier: Any, results: Any, env: dict[str, str]) -> None:
    """Our client: refresh under the row lock, adopt what another process refreshed."""
    _child_setup(env)
    from oauth.client import PortalClient
    from tenants.models import Portal

    client = PortalClient(Portal.objects.get(pk=portal_id))
    barrier.wait(timeout=60)
    try:
        client.call("app.info")
        results.put("ok")
    except Exception as exc:
        results.put(f"{type(exc).__name__}")


def naive_worker(portal_id: int, barrier: Any, results: Any, env: dict[str, str]) -> None:
    """Baseline: read the pair, refresh it, save it — no lock, no re-read (b24pysdk / fast_bitrix24 style)."""
    _child_setup(env)
    from oauth.errors import B24Error
    from oauth.models import PortalToken
    from oauth.tokens import request_oauth

    token = PortalToken.objects.get(portal_id=portal_id, is_service=True)
    barrier.wait(timeout=60)
    try:
        answer = request_oauth({"grant_type": "refresh_token", "refresh_token": token.refresh_token})
        PortalToken.objects.filter(pk=token.pk).update(expires_at=token.expires_at)
        token.access_token, token.refresh_token = answer["access_token"], answer["refresh_token"]
        token.save()
        results.put("ok")
    except B24Error as exc:
        results.put(exc.code)


def run(worker: Any, portal_id: int, processes: int, env: dict[str, str]) -> tuple[Counter, float]:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    results = context.Queue()
    procs = [context.Process(target=worker, args=(portal_id, barrier, results, env)) for _ in range(processes)]
    for proc in procs:
        proc.start()
    started = time.monotonic()
    outcomes = Counter(results.get(timeout=180) for _ in procs)
    elapsed = time.monotonic() - started
    for proc in procs:
        proc.join(timeout=30)
    return outcomes, elapsed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks refresh_race")
    parser.add_argument("--processes", type=int, default=16)
    parser.add_argument("--oauth-latency", type=float, default=0.2,
                        help="seconds the fake OAuth server takes per call (keeps the race window open)")
    args = parser.parse_args(argv)

    setup_django()
    from django.conf import settings
    from django.utils import timezone

    from oauth.models import PortalToken
    from oauth.tokens import TokenGrant, store_tokens
    from tenants.models import Portal
    from tests.fakes.bitrix24 import FakeBitrix24Cloud

    with scratch_database("bench_refresh") as db_name, FakeBitrix24Cloud(
        client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET
    ) as cloud:
        fake = cloud.create_portal()
        portal = Portal.objects.create(member_id=fake.member_id, domain=fake.domain,
                                       rest_endpoint=fake.client_endpoint, status=Portal.Status.ACTIVE)
        cloud.set_oauth_latency(args.oauth_latency)
        env = {"BENCH_DATABASE_NAME": db_name, "BENCH_OAUTH_URL": cloud.oauth_url, "PROJECT_ROOT": ROOT,
               "TEST_DATABASE_URL": os.environ["DATABASE_URL"]}
        rows = []
        for label, worker in (("locked refresh (b24portal)", locked_worker), ("naive refresh (baseline)", naive_worker)):
            issued = fake.issue_tokens(user_id=1)
            store_tokens(portal, TokenGrant(issued["access_token"], issued["refresh_token"], 3600), user_id=1,
                         is_service=True)
            PortalToken.objects.filter(portal=portal).update(expires_at=timezone.now() - timedelta(seconds=5))
            fake.expire_access_tokens()
            before = cloud.oauth_count("refresh_token")
            outcomes, elapsed = run(worker, portal.pk, args.processes, env)
            oauth_calls = cloud.oauth_count("refresh_token") - before
            failed = sum(n for outcome, n in outcomes.items() if outcome != "ok")
            rows.append((label, oauth_calls, failed, elapsed, dict(outcomes)))

    print(f"refresh race: {args.processes} processes, one expired token, OAuth latency {args.oauth_latency}s")
    print(f"{'variant':<28} {'OAuth calls':>11} {'failed':>7} {'wall s':>7}  outcomes")
    for label, calls, failed, elapsed, outcomes in rows:
        print(f"{label:<28} {calls:>11} {failed:>7} {elapsed:>7.2f}  {outcomes}")
    print("targets (b24portal): OAuth calls 1, failed 0")
    return 0
