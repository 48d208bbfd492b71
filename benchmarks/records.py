"""Benchmark: 10,000 creates through the records API for one portal until every lead exists, beside a naive
one-call-per-record baseline; and the API's intake throughput beside the SMS handler's.

    python -m benchmarks records [--records 10000] [--naive-records 10000] [--intake-seconds 10]
                                 [--concurrency 32] [--workers 4] [--skip-intake]

Part 1 (REST, simulated time). One fake portal with Bitrix24's standard limits (burst 50, 2 req/s). The
records are POSTed to /api/v1/records/ (Django test client in this process; the apply task is only queued,
to a queue nobody reads), then the apply rounds run in this process until no job is owed. The fake cloud's
clock is frozen and our limiter runs on it (tests/bogus_load.simulated_time): a wait for a permit advances
it, so the wall time is the time the limits impose, independent of this machine's speed. Our limiter runs at
B24_RATE_HEADROOM=1.0 here (the default 0.8 leaves a fifth of the portal's budget to other apps on the same
address and would stretch the time by 1/0.8). The bound the limits imply for R requests is (R − burst) / rate.
Baseline on a second portal: one crm.lead.add per record through the same client and limiter.

Part 2 (intake). gunicorn (`--workers` sync workers, DEBUG off) serves the project; a Python client with
`--concurrency` threads drives POST /api/v1/records/ (JSON, Bearer key, a new external_id per request) and
the SMS handler POST /b24/messageservice/<key>/ in alternating rounds; printed: jobs (messages) stored per
second and p50/p99.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from .common import ROOT, closed_loop, scratch_database, setup_django

BURST, RATE = 50, 2.0


def _portal(cloud: Any) -> tuple[Any, Any]:
    from oauth.tokens import TokenGrant, store_tokens
    from tenants.models import Portal, hash_application_token

    fake = cloud.create_portal()
    fake.set_bucket(BURST, RATE)
    portal = Portal.objects.create(
        member_id=fake.member_id, domain=fake.domain, rest_endpoint=fake.client_endpoint, status=Portal.Status.ACTIVE,
        license="ru_pro", rate_plan=Portal.RatePlan.STANDARD,
        application_token_hash=hash_application_token(fake.application_token))
    tokens = fake.issue_tokens(user_id=1, is_admin=True, expires_in=30 * 24 * 3600)
    store_tokens(portal, TokenGrant(tokens["access_token"], tokens["refresh_token"], int(tokens["expires_in"]),
                                    ",".join(fake.scopes)), user_id=1, is_service=True, is_admin=True)
    return fake, portal


def _person(n: int) -> dict[str, Any]:
    return {"external_id": f"u{n}", "full_name": f"Иван Иванов {n}", "phone": f"+7700{n:07d}", "stage": "NEW"}


def _bound(requests: int) -> float:
    return max(requests - BURST, 0) / RATE


def _run_batched(cloud: Any, records: int) -> dict[str, Any]:
    from django.test import Client

    from oauth.client import PortalClient
    from records.applying import apply_round
    from records.keys import do_create_api_key
    from records.models import SyncJob
    from tests.bogus_load import simulated_time
    from tests.fakes import b24_crm

    fake, portal = _portal(cloud)
    _, key = do_create_api_key(portal, name="bench")
    client = Client(HTTP_HOST="127.0.0.1", headers={"Authorization": f"Bearer {key}"})
    started = time.perf_counter()
    for n in range(records):
        response = client.post("/api/v1/records/", json.dumps(_person(n)), content_type="application/json")
        assert response.status_code == 202, response.content
    intake_s = time.perf_counter() - started
    rest = PortalClient(portal, max_wait=1e9)
    with simulated_time(cloud.clock) as clock:
        t0 = clock.now()
        real0 = time.perf_counter()
        while True:
            result = apply_round(portal, rest)
            if result.claimed == 0:
                if not SyncJob.objects.filter(portal=portal, state__in=["pending", "running"]).exists():
                    break
                clock.advance(1.0)  # a job waits for a retry back-off
        sim_s = clock.now() - t0
        real_s = time.perf_counter() - real0
    leads = b24_crm.all_leads(fake)
    return {"requests": fake.count(in_batch=False), "sim_s": sim_s, "real_s": real_s, "intake_s": intake_s,
            "leads": len(leads), "distinct": len({lead.get("ORIGIN_ID") for lead in leads}),
            "rejected_503": fake.rejected_503,
            "succeeded": SyncJob.objects.filter(portal=portal, state="succeeded").count()}


def _run_naive(cloud: Any, records: int) -> dict[str, Any]:
    from oauth.client import PortalClient
    from records.leads import lead_fields, origin_fields
    from tests.bogus_load import simulated_time
    from tests.fakes import b24_crm

    fake, portal = _portal(cloud)
    rest = PortalClient(portal, max_wait=1e9)
    with simulated_time(cloud.clock) as clock:
        t0 = clock.now()
        real0 = time.perf_counter()
        for n in range(records):
            person = _person(n)
            external_id = person.pop("external_id")
            rest.call("crm.lead.add", {"fields": {**lead_fields(person, {}), **origin_fields(external_id)}})
        sim_s = clock.now() - t0
        real_s = time.perf_counter() - real0
    leads = b24_crm.all_leads(fake)
    return {"requests": fake.count(in_batch=False), "sim_s": sim_s, "real_s": real_s, "leads": len(leads),
            "distinct": len({lead.get("ORIGIN_ID") for lead in leads}), "rejected_503": fake.rejected_503}


def _rest_part(args: argparse.Namespace) -> None:
    from django.conf import settings

    from b24portal.celery import app
    from tests.fakes import b24_crm, b24_placements
    from tests.fakes.bitrix24 import FakeBitrix24Cloud
    from tests.fakes.clock import Clock

    queue = f"bench-records-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.task_default_queue, app.conf.task_routes = queue, None
    settings.B24_RATE_HEADROOM = 1.0
    settings.RECORDS_THROTTLE = "100000000/min"
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]
    try:
        with scratch_database("bench_records"), FakeBitrix24Cloud(
                client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET, clock=Clock.manual()) as cloud:
            b24_placements.install(cloud)
            b24_crm.install(cloud)
            settings.B24_OAUTH_URL, settings.B24_SERVER_ENDPOINT = cloud.oauth_url, cloud.server_endpoint
            ours = _run_batched(cloud, args.records)
            naive = _run_naive(cloud, args.naive_records)
    finally:
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(queue)
    target = math.ceil(args.records / 50)
    print(f"\nrecords REST benchmark: one fake portal per variant, burst {BURST}, {RATE:g} req/s; simulated time "
          f"(frozen fake clock, our limiter on it, B24_RATE_HEADROOM=1.0); bound = (requests − {BURST}) / {RATE:g}")
    print(f"{'variant':<34} {'records':>7} {'leads':>6} {'distinct':>8} {'REST req':>8} {'503s':>5} {'sim s':>8} "
          f"{'bound s':>8} {'sim/bound':>9} {'real s':>7}")
    for name, row, count in (("records API (batched)", ours, args.records),
                             ("naive: one crm.lead.add per record", naive, args.naive_records)):
        bound = _bound(row["requests"])
        ratio = row["sim_s"] / bound if bound else float("nan")
        print(f"{name:<34} {count:>7} {row['leads']:>6} {row['distinct']:>8} {row['requests']:>8} "
              f"{row['rejected_503']:>5} {row['sim_s']:>8.1f} {bound:>8.1f} {ratio:>9.3f} {row['real_s']:>7.1f}")
    ideal = _bound(target)
    print(f"targets: REST requests ≤ ⌈{args.records}/50⌉ + a few = {target} + a few → {ours['requests']} "
          f"({'met' if ours['requests'] <= target + 5 else 'NOT met'}); wall within 1.1× of the bound for {target} "
          f"requests ({ideal:.1f} s) → {ours['sim_s'] / ideal if ideal else float('nan'):.3f}× "
          f"({'met' if ideal and ours['sim_s'] <= 1.1 * ideal else 'NOT met'}); 503s {ours['rejected_503']} "
          f"({'met' if ours['rejected_503'] == 0 else 'NOT met'}); every record one lead: "
          f"{'yes' if ours['leads'] == ours['distinct'] == args.records else 'NO'}")
    print(f"(intake of the {args.records} creates through the Django test client in this process took "
          f"{ours['intake_s']:.1f} s: {args.records / ours['intake_s']:.0f} jobs/s, one client, no HTTP)")


# -- part 2: intake throughput under gunicorn ------------------------------------------------------------
def _load(url: str, make: Any, seconds: float, concurrency: int) -> dict[str, Any]:
    def send(session: Any, unique: str) -> int:
        data, headers = make(unique)
        return int(session.post(url, data=data, headers=headers, timeout=30).status_code)

    return closed_loop(send, seconds, concurrency)


def _intake_part(args: argparse.Namespace) -> None:
    from urllib.parse import urlencode

    from django.conf import settings
    from django.db import connections

    from messageservice.models import Message
    from records.keys import do_create_api_key
    from records.models import SyncJob
    from tests.fakes.b24_messageservice import send_from_bitrix24
    from tests.fakes.bitrix24 import FakeBitrix24Cloud

    from .handler import SENDER_CODE, _delete_queue, _free_port, _setup_portal, _start_gunicorn, _stop

    queue = f"bench-records-intake-{uuid.uuid4().hex[:8]}"
    workdir = Path(tempfile.mkdtemp(prefix="bench-records-"))
    gunicorn = None
    rows: dict[str, dict[str, Any]] = {}
    try:
        with scratch_database("bench_records_intake") as db_name, FakeBitrix24Cloud(
                client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET) as cloud:
            fake = cloud.create_portal()
            portal, _ = _setup_portal(fake)
            _, key = do_create_api_key(portal, name="bench")
            form = send_from_bitrix24(fake, SENDER_CODE, "+79991234567", "Your order has shipped.",
                                      message_id="f" * 32, check_registered=False)
            connections.close_all()
            base_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "BENCH_CELERY_QUEUE": queue,
                   "TEST_DATABASE_URL": f"{base_url}/{db_name}", "BENCH_DATABASE_NAME": db_name, "PYTHONPATH": ROOT,
                   "DEBUG": "false", "RECORDS_THROTTLE": "100000000/min"}
            port = _free_port()
            gunicorn = _start_gunicorn(port, env, args, workdir / "gunicorn.log")
            url = f"http://127.0.0.1:{port}"

            def records_request(unique: str) -> tuple[bytes, dict[str, str]]:
                body = {"external_id": unique, "full_name": "Иван Иванов", "phone": "+77001112233", "stage": "NEW"}
                return json.dumps(body).encode(), {"Content-Type": "application/json",
                                                   "Authorization": f"Bearer {key}"}

            def sms_request(unique: str) -> tuple[bytes, dict[str, str]]:
                body = urlencode({**form, "message_id": unique.ljust(32, "0")[:32]})
                return body.encode(), {"Content-Type": "application/x-www-form-urlencoded"}

            endpoints = {"POST /api/v1/records/": (f"{url}/api/v1/records/", records_request),
                         "POST SMS handler": (f"{url}/b24/messageservice/{portal.handler_key}/", sms_request)}
            for target, make in endpoints.values():
                _load(target, make, 2.0, args.concurrency)  # warm-up
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in endpoints}
            for _ in range(args.rounds):
                for label, (target, make) in endpoints.items():
                    runs[label].append(_load(target, make, args.intake_seconds, args.concurrency))
            for label, done in runs.items():
                total = sum(r["requests"] for r in done)
                seconds = sum(r["seconds"] for r in done)
                rows[label] = {"requests": total, "rps": total / seconds, "errors": sum(r["errors"] for r in done),
                               "p50": sorted(r["p50_ms"] for r in done)[len(done) // 2],
                               "p99": max(r["p99_ms"] for r in done)}
            stored = {"jobs": SyncJob.objects.count(), "messages": Message.objects.count()}
            _stop(gunicorn)
            gunicorn = None
    finally:
        _stop(gunicorn)
        try:
            _delete_queue(queue)
        except Exception as exc:
            print(f"warning: could not delete Redis queue {queue}: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nintake benchmark: gunicorn {args.workers} sync workers, DEBUG off; Python client (no wrk here: a lower "
          f"bound for both) {args.concurrency} threads, {args.rounds} alternating round(s) of "
          f"{args.intake_seconds:g} s after 2 s warm-up each")
    print(f"{'endpoint':<24} {'requests':>9} {'stored/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6}")
    for label, row in rows.items():
        print(f"{label:<24} {row['requests']:>9} {row['rps']:>9.0f} {row['p50']:>7.1f} {row['p99']:>7.1f} "
              f"{row['errors']:>6}")
    ratio = rows["POST /api/v1/records/"]["rps"] / rows["POST SMS handler"]["rps"]
    print(f"records API / SMS handler: {ratio:.2f}×; stored in total (warm-up included): {stored['jobs']} jobs, "
          f"{stored['messages']} messages (tasks only queued, queue deleted)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks records", description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--naive-records", type=int, default=10_000)
    parser.add_argument("--intake-seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--skip-intake", action="store_true")
    parser.add_argument("--skip-rest", action="store_true")
    args = parser.parse_args(argv)
    args.worker_class, args.threads = "sync", 1  # what handler._start_gunicorn reads
    setup_django()
    if not args.skip_rest:
        _rest_part(args)
    if not args.skip_intake:
        _intake_part(args)
    return 0
