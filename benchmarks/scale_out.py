"""Benchmark: the status pipeline (poll + push) scaled out over 1, 2 and 4 worker processes, many portals.

    python -m benchmarks scale_out [--portals 40] [--per-portal 100] [--workers 1,2,4] [--chunk 5]

For each worker count, `--portals` fresh fake portals (a generous leaky bucket, so Bitrix24's limit is not
what is measured) each get `--per-portal` messages already delivered at a fake SMS.ru; then that many
forked processes run the real beat entry points (`dispatch_status_polls`, `dispatch_status_pushes`; Celery
eager, so the chunk tasks `poll_accounts` / `push_statuses` of `--chunk` accounts/portals run in the
process that dispatched them) until every status is in the portals. Work is split by the per-account and
per-portal claims alone (no coordinator task). Printed per worker count: wall time, statuses per second,
the speed-up over one worker, and the double-work check: status updates received per message (must be
exactly 1) and batch requests per portal (must be ceil(per_portal / 50)).

Use an otherwise idle Redis database (TEST_REDIS_URL): the limiter and the claims live there.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from typing import Any

from .common import scratch_database, setup_django
from .status_pipeline import _forked, _make_portal, _pipeline_worker, _seed


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks scale_out", description=__doc__.split("\n")[0])
    parser.add_argument("--portals", type=int, default=40)
    parser.add_argument("--per-portal", type=int, default=100)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--chunk", type=int, default=5, help="accounts/portals per chunk task")
    parser.add_argument("--beat-interval", type=float, default=0.2)
    parser.add_argument("--timeout", type=float, default=600)
    args = parser.parse_args(argv)

    setup_django()
    import requests
    from django.conf import settings
    from django.db import connections

    from messageservice import delivery
    from tests.fakes.b24_messageservice import status_updates
    from tests.fakes.bitrix24 import FakeBitrix24Cloud
    from tests.fakes.carriers import FakeSmsRu

    delivery.DISPATCH_CHUNK = args.chunk  # inherited by the forked workers
    rows: list[tuple[int, float, int, int, bool]] = []
    with scratch_database("bench_scale") as _db, FakeBitrix24Cloud(
            client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET) as cloud, \
            FakeSmsRu() as carrier, requests.Session() as session:
        settings.B24_OAUTH_URL, settings.B24_SERVER_ENDPOINT = cloud.oauth_url, cloud.server_endpoint
        for workers in [int(w) for w in args.workers.split(",")]:
            portals: list[Any] = [_make_portal(cloud, carrier, 10_000, 1_000, enterprise=True)
                                  for _ in range(args.portals)]
            seeded = sum(_seed(fake, portal, account, carrier, session, args.per_portal)
                         for fake, portal, account in portals)
            carrier.deliver_all()
            for fake, _p, _a in portals:
                with fake.lock:
                    fake.requests.clear()
            connections.close_all()  # children must not share the parent's connection
            ctx = multiprocessing.get_context("fork")
            stop, out = ctx.Event(), ctx.Queue()
            started = time.monotonic()
            procs = _forked(_pipeline_worker, [(stop, out, args.beat_interval)] * workers)
            arrived = 0
            try:
                while time.monotonic() - started < args.timeout:
                    arrived = sum(1 for fake, _p, _a in portals for u in status_updates(fake)
                                  if u["STATUS"] == "delivered")
                    if arrived >= seeded:
                        break
                    time.sleep(0.02)
                wall = time.monotonic() - started
            finally:
                stop.set()
                for _ in procs:
                    out.get(timeout=120)
                for proc in procs:
                    proc.join(timeout=30)
            time.sleep(0.5)  # let a straggling duplicate (if any) arrive before counting
            per_message = [sum(1 for u in status_updates(fake) if u["STATUS"] == "delivered")
                           for fake, _p, _a in portals]
            batches = [fake.count("batch") for fake, _p, _a in portals]
            exact = all(n == args.per_portal for n in per_message)
            max_batches = max(batches)
            rows.append((workers, wall, arrived, max_batches, exact and max_batches <= math.ceil(args.per_portal / 50)))
            # the next round's portals are new; these rows stay (final, nothing due)

    print(f"scale-out: {args.portals} portals × {args.per_portal} messages per round, chunks of {args.chunk}, "
          f"Celery eager in each forked worker, claims in Redis")
    print(f"{'workers':>7} {'wall s':>8} {'statuses':>9} {'statuses/s':>11} {'speed-up':>9} {'max batches/portal':>19}"
          f" {'no double work':>15}")
    base = rows[0][2] / rows[0][1] if rows and rows[0][1] else 0.0
    for workers, wall, arrived, max_batches, ok in rows:
        rate = arrived / wall if wall else 0.0
        print(f"{workers:>7} {wall:>8.2f} {arrived:>9} {rate:>11.0f} {rate / base if base else 0:>8.2f}×"
              f" {max_batches:>19} {'yes' if ok else 'NO':>15}")
    return 0
