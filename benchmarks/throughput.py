"""Benchmark 2: REST throughput under Bitrix24's leaky bucket, with several worker processes.

    python -m benchmarks throughput [--commands 5000] [--workers 4] [--burst 50] [--rate 2] [--naive 100]

N worker processes (forked) push `--commands` commands through `PortalClient.batch` to ONE fake portal whose
bucket is `--burst` requests with `--rate` requests/s drain (the fake answers 503 QUERY_LIMIT_EXCEEDED
above it). Every process takes its permits from the same Redis limiter, which runs at B24_RATE_HEADROOM
(default 0.8) of the portal's plan limit, because in production other apps on our egress IP share the
portal's bucket. Printed: wall time against the bound that the limit implies, 503s received, HTTP
requests made; then a naive baseline (one HTTP request per command) for a smaller number of commands,
with its time projected to the full number. Figures are printed, never asserted.

Use an otherwise idle Redis database (TEST_REDIS_URL): a test run flushing it mid-benchmark would hand
out the burst again.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from typing import Any

from .common import scratch_database, setup_django, use_inherited_database


def _worker(portal_id: int, keys: list[int], mode: str, out: Any) -> None:
    """One process: its share of the commands, as batches of 50 (mode "batch") or one call each ("naive")."""
    from django.db import connections

    use_inherited_database()
    connections.close_all()
    from oauth.client import PortalClient
    from tenants.models import Portal

    client = PortalClient(Portal.objects.get(pk=portal_id), max_wait=3600)  # a benchmark process may wait
    errors = 0
    if mode == "batch":
        for start in range(0, len(keys), 50):
            result = client.batch({f"c{k}": ("bench.echo", {"N": k}) for k in keys[start:start + 50]})
            errors += len(result.errors)
    else:
        for k in keys:
            client.call("bench.echo", {"N": k})
    connections.close_all()
    out.put(errors)


def _run(portal_id: int, commands: int, workers: int, mode: str) -> tuple[float, int]:
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    shares = [list(range(i, commands, workers)) for i in range(workers)]
    procs = [ctx.Process(target=_worker, args=(portal_id, share, mode, out)) for share in shares]
    started = time.monotonic()
    for proc in procs:
        proc.start()
    errors = sum(out.get(timeout=7200) for _ in procs)
    for proc in procs:
        proc.join()
    return time.monotonic() - started, errors


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--naive", type=int, default=100, help="commands for the naive baseline (then projected)")
    args = parser.parse_args(argv)

    setup_django()
    from django.conf import settings
    from django.db import connections

    from oauth import ratelimit
    from oauth.models import RestCall
    from oauth.tokens import TokenGrant, store_tokens
    from tenants.models import Portal
    from tests.fakes.bitrix24 import FakeBitrix24Cloud

    with scratch_database("throughput"), FakeBitrix24Cloud(client_id=settings.B24_CLIENT_ID,
                                                           client_secret=settings.B24_CLIENT_SECRET) as cloud:
        settings.B24_OAUTH_URL, settings.B24_SERVER_ENDPOINT = cloud.oauth_url, cloud.server_endpoint
        fake = cloud.create_portal()
        fake.register_method("bench.echo", lambda p, params, ctx: params.get("N"))
        portal = Portal.objects.create(member_id=fake.member_id, domain=fake.domain,
                                       rest_endpoint=fake.client_endpoint, status=Portal.Status.ACTIVE)
        tokens = fake.issue_tokens()
        store_tokens(portal, TokenGrant(tokens["access_token"], tokens["refresh_token"], tokens["expires_in"]),
                     user_id=1, is_service=True)
        connections.close_all()  # children must not share the parent's connection

        # Our plan limit must match the fake's bucket for the headroom to mean anything.
        plan_rate, plan_burst = portal.rest_rate_limit
        if (plan_rate, plan_burst) != (args.rate, args.burst):
            print(f"note: the portal's plan limit is {plan_rate}/s burst {plan_burst}; the fake enforces "
                  f"{args.rate}/s burst {args.burst}")
        bucket = ratelimit.bucket_for(portal)
        headroom = float(getattr(settings, "B24_RATE_HEADROOM", 0.8))

        def fresh() -> None:
            fake.set_bucket(args.burst, args.rate)
            with fake.lock:
                fake.requests.clear()
                fake.rejected_503 = 0
            ratelimit.reset(portal)

        def bound(requests_: int) -> float:
            return max(0, requests_ - bucket.burst) / bucket.rate

        # -- batched ------------------------------------------------------------------------------
        fresh()
        expected_requests = math.ceil(args.commands / 50)
        wall, errors = _run(portal.pk, args.commands, args.workers, "batch")
        made, rejected = fake.count("batch"), fake.rejected_503
        logged = RestCall.objects.filter(portal=portal, method="batch").count()
        limit_bound = bound(made)
        print(f"Fake portal bucket: burst {args.burst}, {args.rate:g} req/s. Our limiter: headroom {headroom:g} → "
              f"burst {bucket.burst}, {bucket.rate:g} req/s (the rest is left for other apps on our IP).")
        print(f"\nBATCHED: {args.workers} processes, {args.commands} commands in batches of 50")
        print(f"  HTTP requests made    : {made} (target ceil({args.commands}/50) = {expected_requests})")
        print(f"  503s received         : {rejected} (target 0); command errors: {errors}")
        print(f"  call-log rows         : {logged}")
        print(f"  wall time             : {wall:.1f} s")
        print(f"  bound at our limit    : max(0, {made} − {bucket.burst}) / {bucket.rate:g} = {limit_bound:.1f} s"
              f"  → ratio {wall / limit_bound if limit_bound else float('nan'):.3f} (target ≤ 1.1)")
        print(f"  bound at the full limit (no headroom): max(0, {made} − {args.burst}) / {args.rate:g} = "
              f"{max(0, made - args.burst) / args.rate:.1f} s")

        # -- naive -------------------------------------------------------------------------------
        fresh()
        naive_wall, _ = _run(portal.pk, args.naive, args.workers, "naive")
        naive_made, naive_rejected = fake.count("bench.echo"), fake.rejected_503
        print(f"\nNAIVE baseline: one HTTP request per command, {args.naive} commands (not {args.commands}: "
              f"it would take about {bound(args.commands) / 60:.0f} minutes)")
        print(f"  HTTP requests made    : {naive_made}; 503s: {naive_rejected}")
        print(f"  wall time             : {naive_wall:.1f} s (bound {bound(naive_made):.1f} s)")
        paced = (naive_wall / max(naive_made - bucket.burst, 1)) * max(args.commands - bucket.burst, 0)
        print(f"  projected for {args.commands} commands: {args.commands} requests, ≈ {paced:.0f} s from the measured "
              f"pace (bound {bound(args.commands):.0f} s) vs {wall:.1f} s batched "
              f"(≈ {paced / wall if wall else float('nan'):.0f}× slower)")
    return 0
