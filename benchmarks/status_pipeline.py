"""Benchmark: delivery statuses from the carrier to Bitrix24 (poll + push), under Bitrix24's leaky bucket.

    python -m benchmarks status_pipeline [--messages 5000] [--portals 10] [--workers 4] [--burst 50]
                                         [--rate 2] [--naive 600] [--memory-rows 100000] [--memory-rounds 3]

`--messages` messages over `--portals` fake portals (each enforcing `--rate` req/s, burst `--burst`), already
"delivered" at a fake SMS.ru; `--workers` forked processes run the real beat entry points
(`dispatch_status_polls`, `dispatch_status_pushes`, Celery eager: they run `poll_account` and
`push_portal_statuses` in the same process, the task locks keeping processes apart) until every status
has reached the fake portals. Printed: wall time against the bound the limits imply, REST requests per
portal, 503s; beside a naive baseline (one `messageservice.message.status.update` call per message through
the same client and limiter) measured on `--naive` messages and projected to `--messages`. Then the peak
memory of one worker process polling and pushing `--memory-rounds` chunks with `--memory-rows` messages due.

Use an otherwise idle Redis database (TEST_REDIS_URL): the limiter and the task locks live there.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import resource
import secrets
import time
import uuid
from datetime import timedelta
from typing import Any

from .common import scratch_database, setup_django, use_inherited_database

SENDER_CODE = "bench_sms"
COMMAND = "messageservice.message.status.update"


# -- set-up ----------------------------------------------------------------------------------------------
def _make_portal(cloud: Any, carrier: Any, burst: float, rate: float, *, enterprise: bool = False) -> tuple[Any, Any, Any]:
    from messageservice.models import ProviderAccount
    from oauth.tokens import TokenGrant, store_tokens
    from tenants.models import Portal, hash_application_token
    from tests.fakes.b24_messageservice import install_messageservice

    fake = install_messageservice(cloud.create_portal(enterprise=enterprise))
    fake.set_bucket(burst, rate)
    portal = Portal.objects.create(
        member_id=fake.member_id, domain=fake.domain, rest_endpoint=fake.client_endpoint, status=Portal.Status.ACTIVE,
        phone_region="RU", license="ru_pro",
        rate_plan=Portal.RatePlan.ENTERPRISE if enterprise else Portal.RatePlan.STANDARD,
        application_token_hash=hash_application_token(fake.application_token))
    tokens = fake.issue_tokens(user_id=1, is_admin=True, expires_in=3 * 3600)
    store_tokens(portal, TokenGrant(tokens["access_token"], tokens["refresh_token"], int(tokens["expires_in"]),
                                    ",".join(fake.scopes)), user_id=1, is_service=True, is_admin=True)
    # Created directly (not through do_save_account): registering the sender is not what is measured, and
    # the fake's status.update finds messages by MESSAGE_ID only (as CORE does).
    account = ProviderAccount.objects.create(
        portal=portal, carrier="smsru", code=SENDER_CODE, name="Bench SMS", credentials=carrier.credentials,
        base_url=carrier.base_url, registration_state=ProviderAccount.Registration.REGISTERED)
    return fake, portal, account


def _carrier_ids(carrier: Any, session: Any, count: int) -> list[str]:
    """Send `count` messages to the fake SMS.ru over its wire API (100 recipients per request)."""
    ids: list[str] = []
    while len(ids) < count:
        numbers = [f"7999{secrets.randbelow(10**7):07d}" for _ in range(min(100, count - len(ids)))]
        answer = session.post(f"{carrier.base_url}/sms/send", timeout=30, data={
            **carrier.credentials, "json": "1", "to": ",".join(numbers), "msg": "bench"}).json()
        ids.extend(entry["sms_id"] for entry in answer["sms"].values())
    return ids


def _seed(fake: Any, portal: Any, account: Any, carrier: Any, session: Any, count: int, *,
          register_in_bitrix24: bool = True, chunk: int = 5000) -> int:
    """`count` messages handed to the carrier, status `queued` already pushed, due for a poll now."""
    from django.utils import timezone

    from messageservice.models import Message
    from tests.fakes.b24_messageservice import send_from_bitrix24

    now = timezone.now()
    made = 0
    while made < count:
        n = min(chunk, count - made)
        carrier_ids = _carrier_ids(carrier, session, n)
        rows = []
        for cmid in carrier_ids:
            message_id = (send_from_bitrix24(fake, SENDER_CODE, "+79991234567", "bench", check_registered=False)
                          ["message_id"] if register_in_bitrix24 else secrets.token_hex(16))
            rows.append(Message(
                portal=portal, account=account, carrier="smsru", message_id=message_id, origin=Message.Origin.CRM,
                recipient_raw="+79991234567", recipient="+79991234567", body="bench", state=Message.State.HANDED_TO_CARRIER,
                attempts=1, sent_at=now - timedelta(minutes=2), status="queued", carrier_status="100",
                carrier_message_id=cmid, status_changed_at=now - timedelta(minutes=2), pushed_status="queued",
                push_due=False, next_poll_at=now - timedelta(seconds=1), created_at=now - timedelta(minutes=2)))
        Message.objects.bulk_create(rows, batch_size=1000)
        made += n
    return made


# -- worker processes ------------------------------------------------------------------------------------
def _pipeline_worker(stop: Any, out: Any, beat_interval: float) -> None:
    """One worker: the beat entry points in a loop (eager Celery runs the per-account / per-portal tasks
    here); stops when the parent has seen every status arrive."""
    from django.db import connections

    use_inherited_database()
    connections.close_all()
    from messageservice import delivery

    rounds = polls = pushes = 0
    while not stop.is_set():
        rounds += 1
        polls_ = delivery.dispatch_status_polls()
        pushes_ = delivery.dispatch_status_pushes()
        polls, pushes = polls + polls_, pushes + pushes_
        # the beat's period: dispatching continuously would push half-filled batches while a poll is still
        # moving statuses one row at a time
        time.sleep(beat_interval if (polls_ or pushes_) else 0.05)
    connections.close_all()
    out.put((rounds, polls, pushes))


def _naive_worker(portal_id: int, message_ids: list[str], out: Any) -> None:
    """Baseline: one status.update per message through the same client and limiter."""
    from django.db import connections

    use_inherited_database()
    connections.close_all()
    from oauth.client import PortalClient
    from tenants.models import Portal

    client = PortalClient(Portal.objects.get(pk=portal_id), max_wait=3600)  # a benchmark process may wait
    errors = 0
    for message_id in message_ids:
        try:
            client.call(COMMAND, {"CODE": SENDER_CODE, "MESSAGE_ID": message_id, "STATUS": "delivered"})
        except Exception:
            errors += 1
    connections.close_all()
    out.put(errors)


def _rss_kb(field: str = "VmRSS") -> int:
    """Current RSS, or with "VmHWM" this process image's peak. Not ru_maxrss: Linux carries the forking
    parent's peak over fork + exec, so a spawned child would report the parent's 100k-row seeding."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def _memory_worker(env: dict[str, str], account_id: int, portal_id: int, rounds: int, out: Any) -> None:
    """A fresh (spawned) worker: set up, note its RSS, run `rounds` poll + push chunks, report the peak.
    Celery is not eager here: a chunk's re-dispatch goes to a throwaway queue, as in a real worker."""
    os.environ.update(env)
    setup_django()
    use_inherited_database()
    from django.conf import settings

    from b24portal.celery import app
    from messageservice import delivery
    from messageservice.models import Message, ProviderAccount

    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.task_default_queue = env["BENCH_CELERY_QUEUE"]
    ProviderAccount.objects.select_related("portal").get(pk=account_id).get_carrier()  # imports, connections
    baseline_rss, baseline_peak = _rss_kb(), _rss_kb("VmHWM")
    results = []
    started = time.monotonic()
    for _ in range(rounds):
        results.append(delivery.poll_account(account_id))
        try:
            results.append(delivery.push_portal_statuses(portal_id))
        except Exception as exc:  # a called-directly task re-raises what it would retry on (rate limit)
            results.append(f"push raised {type(exc).__name__}")
    elapsed = time.monotonic() - started
    pushed = Message.objects.filter(portal_id=portal_id, pushed_status="delivered").count()
    out.put({"baseline_rss_kb": baseline_rss, "baseline_peak_kb": baseline_peak,
             "peak_kb": _rss_kb("VmHWM"),
             "ru_maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "results": results,
             "pushed": pushed, "seconds": elapsed})


def _forked(target: Any, arg_sets: list[tuple[Any, ...]]) -> list[Any]:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in arg_sets]
    for proc in procs:
        proc.start()
    return procs


# -- main ------------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks status_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--portals", type=int, default=10)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--naive", type=int, default=600, help="messages for the naive baseline (then projected)")
    parser.add_argument("--memory-rows", type=int, default=100_000)
    parser.add_argument("--memory-rounds", type=int, default=3, help="poll + push chunks the memory worker runs")
    parser.add_argument("--beat-interval", type=float, default=1.0,
                        help="seconds between a worker's dispatch calls after it found work")
    parser.add_argument("--timeout", type=float, default=900, help="give up waiting for the statuses after this")
    args = parser.parse_args(argv)

    setup_django()
    import requests
    from django.conf import settings
    from django.db import connections

    from messageservice.models import Message
    from oauth import ratelimit
    from tests.fakes.b24_messageservice import status_updates
    from tests.fakes.bitrix24 import FakeBitrix24Cloud
    from tests.fakes.carriers import FakeSmsRu

    per_portal = math.ceil(args.messages / args.portals)
    naive_per_portal = math.ceil(args.naive / args.portals)
    headroom = float(getattr(settings, "B24_RATE_HEADROOM", 0.8))
    queue = f"bench-status-{uuid.uuid4().hex[:8]}"
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    with scratch_database("bench_status") as db_name, FakeBitrix24Cloud(
            client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET) as cloud, \
            FakeSmsRu() as carrier, requests.Session() as session:
        settings.B24_OAUTH_URL, settings.B24_SERVER_ENDPOINT = cloud.oauth_url, cloud.server_endpoint
        portals = [_make_portal(cloud, carrier, args.burst, args.rate) for _ in range(args.portals)]
        seeded = sum(_seed(fake, portal, account, carrier, session, per_portal)
                     for fake, portal, account in portals)
        carrier.deliver_all()
        bucket = ratelimit.bucket_for(portals[0][1])
        plan_rate, plan_burst = portals[0][1].rest_rate_limit
        if (plan_rate, plan_burst) != (args.rate, args.burst):
            print(f"note: the portals' plan limit is {plan_rate:g}/s burst {plan_burst}; the fakes enforce "
                  f"{args.rate:g}/s burst {args.burst}")

        def fresh() -> None:
            for fake, portal, _account in portals:
                fake.set_bucket(args.burst, args.rate)
                with fake.lock:
                    fake.requests.clear()
                    fake.rejected_503 = 0
                ratelimit.reset(portal)

        # -- the pipeline -----------------------------------------------------------------------------
        fresh()
        connections.close_all()  # children must not share the parent's connection
        ctx = multiprocessing.get_context("fork")
        stop, out = ctx.Event(), ctx.Queue()
        started = time.monotonic()
        procs = _forked(_pipeline_worker, [(stop, out, args.beat_interval)] * args.workers)
        arrived = 0
        try:
            while time.monotonic() - started < args.timeout:
                arrived = sum(1 for fake, _p, _a in portals for u in status_updates(fake) if u["STATUS"] == "delivered")
                if arrived >= seeded:
                    break
                time.sleep(0.02)
            wall = time.monotonic() - started
        finally:
            stop.set()
            worker_stats = [out.get(timeout=120) for _ in procs]
            for proc in procs:
                proc.join(timeout=30)
        batch_requests = [fake.count("batch") for fake, _p, _a in portals]
        single_requests = [fake.count(COMMAND, in_batch=False) for fake, _p, _a in portals]
        rejected = sum(fake.rejected_503 for fake, _p, _a in portals)
        carrier_status_requests = len(carrier.requests_for("status"))
        db_pushed = Message.objects.filter(pushed_status="delivered", push_due=False).count()
        bound = max(max(0, n - bucket.burst) / bucket.rate for n in batch_requests)
        full_bound = max(max(0, n - args.burst) / args.rate for n in batch_requests)
        target_requests = math.ceil(per_portal / 50)

        # -- the naive baseline ------------------------------------------------------------------------
        naive_ids = [[send_id(fake) for _ in range(naive_per_portal)] for fake, _p, _a in portals]
        fresh()
        connections.close_all()
        naive_out = multiprocessing.get_context("fork").Queue()
        naive_started = time.monotonic()
        naive_procs = _forked(_naive_worker, [(portal.pk, ids, naive_out)
                                              for (_f, portal, _a), ids in zip(portals, naive_ids, strict=True)])
        naive_errors = sum(naive_out.get(timeout=args.timeout) for _ in naive_procs)
        naive_wall = time.monotonic() - naive_started
        for proc in naive_procs:
            proc.join(timeout=30)
        naive_requests = [fake.count(COMMAND, in_batch=False) for fake, _p, _a in portals]
        naive_rejected = sum(fake.rejected_503 for fake, _p, _a in portals)
        naive_bound = max(max(0, n - bucket.burst) / bucket.rate for n in naive_requests)
        pace = naive_wall / max(max(naive_requests) - bucket.burst, 1)  # seconds per request beyond the burst
        projected_bound = max(0, per_portal - bucket.burst) / bucket.rate
        projected = pace * max(per_portal - bucket.burst, 0)

        # -- memory ------------------------------------------------------------------------------------
        mem_fake, mem_portal, mem_account = _make_portal(cloud, carrier, 250, 5, enterprise=True)
        seed_started = time.monotonic()
        _seed(mem_fake, mem_portal, mem_account, carrier, session, args.memory_rows)
        carrier.deliver_all()
        seed_seconds = time.monotonic() - seed_started
        ratelimit.reset(mem_portal)
        connections.close_all()
        spawn = multiprocessing.get_context("spawn")
        mem_out = spawn.Queue()
        env = {"BENCH_DATABASE_NAME": db_name, "BENCH_CELERY_QUEUE": queue,
               "TEST_DATABASE_URL": os.environ["DATABASE_URL"], "DJANGO_SETTINGS_MODULE": "tests.settings"}
        mem_proc = spawn.Process(target=_memory_worker,
                                 args=(env, mem_account.pk, mem_portal.pk, args.memory_rounds, mem_out))
        mem_proc.start()
        try:
            memory = mem_out.get(timeout=args.timeout)
        finally:
            mem_proc.join(timeout=60)
            from b24portal.celery import app

            with app.connection_for_write() as conn:
                conn.default_channel.client.delete(queue)
        mem_due = Message.objects.filter(portal=mem_portal, next_poll_at__isnull=False).count()

    # -- report ------------------------------------------------------------------------------------------
    print(f"\nstatus pipeline: {seeded} messages over {args.portals} fake portals ({per_portal} each), delivered at a "
          f"fake SMS.ru; {args.workers} worker processes running dispatch_status_polls / dispatch_status_pushes")
    print(f"fake bucket per portal: burst {args.burst}, {args.rate:g} req/s; our limiter at headroom {headroom:g}: "
          f"burst {bucket.burst}, {bucket.rate:g} req/s")
    print(f"\n{'variant':<34} {'messages':>8} {'REST req/portal':>16} {'503s':>5} {'wall s':>8} {'bound s':>8}")
    print(f"{'batched poll+push (b24portal)':<34} {seeded:>8} "
          f"{f'{min(batch_requests)}-{max(batch_requests)}':>16} {rejected:>5} {wall:>8.2f} {bound:>8.2f}   measured")
    print(f"{'naive, 1 call per message':<34} {sum(len(i) for i in naive_ids):>8} "
          f"{f'{min(naive_requests)}-{max(naive_requests)}':>16} {naive_rejected:>5} {naive_wall:>8.2f} "
          f"{naive_bound:>8.2f}   measured")
    print(f"{'naive, 1 call per message':<34} {seeded:>8} {per_portal:>16} {'-':>5} {projected:>8.0f} "
          f"{projected_bound:>8.0f}   PROJECTED from the measured pace ({pace:.3f} s per request beyond the burst)")
    print("\nbatched run:")
    print(f"  statuses in the fake portals : {arrived} of {seeded} (rows marked pushed in our DB: {db_pushed})")
    print(f"  REST requests per portal     : {batch_requests} batch; {sum(single_requests)} single calls "
          f"(target ceil({per_portal}/50) = {target_requests} each)")
    print(f"  503s received                : {rejected} (target 0)")
    print(f"  carrier status requests      : {carrier_status_requests} (SMS.ru: 100 ids each → "
          f"{math.ceil(seeded / 100)} minimum)")
    print(f"  bound from the limits        : max over portals of max(0, requests − {bucket.burst}) / {bucket.rate:g} "
          f"= {bound:.2f} s (at the full limit, no headroom: {full_bound:.2f} s)")
    if bound < 0.5:
        print(f"  → every portal's {max(batch_requests)} requests fit in the burst, so the limit implies no wait: "
              f"the {wall:.2f} s are our own work (polling {seeded} statuses, {seeded} row updates, "
              f"{sum(batch_requests)} batch requests). Floor used instead of the 1.2× target: the naive "
              f"baseline's limit bound of {projected_bound:.0f} s for the same messages → batched is "
              f"{projected_bound / wall if wall else float('nan'):.0f}× below it.")
    else:
        print(f"  ratio wall / bound           : {wall / bound:.2f} (target ≤ 1.2)")
    print(f"  worker loops (rounds, account polls dispatched, portal pushes dispatched): {worker_stats}")
    print(f"  naive baseline errors: {naive_errors}")

    mb = 1024.0
    print(f"\nworker memory with {args.memory_rows} messages due for poll (seeded in {seed_seconds:.0f} s), "
          f"{args.memory_rounds} rounds of poll_account + push_portal_statuses in a fresh process:")
    print(f"  RSS after set-up             : {memory['baseline_rss_kb'] / mb:.1f} MB "
          f"(peak so far {memory['baseline_peak_kb'] / mb:.1f} MB)")
    print(f"  peak RSS (VmHWM)             : {memory['peak_kb'] / mb:.1f} MB  (target < 300 MB: "
          f"{'met' if memory['peak_kb'] / mb < 300 else 'NOT met'}); growth "
          f"{(memory['peak_kb'] - memory['baseline_rss_kb']) / mb:.1f} MB over the set-up RSS (ru_maxrss, "
          f"inherited from the parent across fork+exec: {memory['ru_maxrss_kb'] / mb:.1f} MB)")
    print(f"  work done                    : {memory['results']} in {memory['seconds']:.1f} s; "
          f"{memory['pushed']} statuses pushed; {mem_due} rows still due for a poll")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    return 0


def send_id(fake: Any) -> str:
    """A message Bitrix24 created (so status.update finds it), for the naive baseline."""
    from tests.fakes.b24_messageservice import send_from_bitrix24

    return send_from_bitrix24(fake, SENDER_CODE, "+79991234567", "bench", check_registered=False)["message_id"]
