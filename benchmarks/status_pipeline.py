"""Benchmark: SMS end to end through a real Celery worker: accepted, sent and polled at the fake carrier,
statuses pushed to the fake Bitrix24 portals.

    python -m benchmarks status_pipeline [--messages 100000] [--portals 100] [--workers 1] [--concurrency 2]
                                         [--acceptors 2] [--beat-interval 1] [--naive 600] [--naive-portals 10]

`--messages` messages over `--portals` fake portals (each enforcing Bitrix24's standard leaky bucket,
`--rate` req/s, burst `--burst`). `--acceptors` forked processes store them through the handler's storage
path (`messageservice.sending.accept`: one transaction per message, `send_message` published on commit);
`--workers` real Celery worker processes (`celery worker`, prefork, `--concurrency` children each, as the
Procfile's SMS worker) consume the benchmark's own queue: `send_message` against a fake SMS.ru that
reports every message delivered at once (its messages are indexed by id), then `poll_account` and
`push_portal_statuses`, dispatched by this process standing in for beat (`dispatch_status_polls` and
`dispatch_status_pushes` every `--beat-interval` s; first poll due at once). The clock runs from the first
accepted message until every status is in the fake portals. Printed: end-to-end messages/s, when the
last message passed each stage, REST requests per portal, 503s, and every worker process's peak RSS
(VmHWM from /proc/<pid>/status, read before the worker is stopped); beside the naive baseline (one
`messageservice.message.status.update` call per message through the same client and limiter, measured on
`--naive` messages over `--naive-portals` portals and projected to the run's messages per portal).

Use an otherwise idle Redis database (TEST_REDIS_URL): the queue, the limiter and the task locks live there.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .common import ROOT, scratch_database, setup_django, use_inherited_database

SENDER_CODE = "bench_sms"
COMMAND = "messageservice.message.status.update"
STAGES = ("accepted", "sent", "polled", "pushed", "in portals")


# -- pure helpers (tested) ---------------------------------------------------------------------------------
def status_field_kb(status_text: str, field: str = "VmHWM") -> int:
    """A `/proc/<pid>/status` memory field in kB (0 when absent)."""
    for line in status_text.splitlines():
        if line.startswith(f"{field}:"):
            parts = line.split()
            return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
    return 0


def stage_rates(messages: int, done_at: Mapping[str, float | None]) -> list[tuple[str, float | None, float | None]]:
    """(stage, seconds from the start until the last message passed it, messages/s to that point);
    None for a stage that was not reached."""
    out: list[tuple[str, float | None, float | None]] = []
    for stage in STAGES:
        seconds = done_at.get(stage)
        out.append((stage, seconds, messages / seconds if seconds else None))
    return out


def push_bound(per_portal: int, burst: float, rate: float) -> float:
    """Seconds one portal's statuses need at least under the rate limit: ceil(n/50) batch calls, the first
    `burst` at once, the rest at `rate` per second."""
    calls = math.ceil(per_portal / 50)
    return max(calls - burst, 0) / rate if rate else 0.0


def split_evenly(items: Sequence[Any], parts: int) -> list[list[Any]]:
    """`items` dealt round-robin into at most `parts` non-empty lists."""
    parts = max(1, min(parts, len(items)))
    return [list(items[i::parts]) for i in range(parts)] if items else []


# -- /proc -------------------------------------------------------------------------------------------------
def _proc_status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            out.extend(int(p) for p in task.read_text().split())
        except OSError:
            pass
    return out


def _process_tree(pid: int) -> list[int]:
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(_children(current))
    return tree


def _peaks(pids: Iterable[int]) -> dict[int, int]:
    """pid -> VmHWM kB, for every process of each worker (the prefork main process and its children)."""
    return {p: status_field_kb(_proc_status(p)) for pid in pids for p in _process_tree(pid)}


# -- set-up ------------------------------------------------------------------------------------------------
def _delivering_smsru() -> Any:
    """The fake SMS.ru, reporting every message delivered as soon as it is sent."""
    from tests.fakes.carriers import FakeSmsRu

    class DeliveringSmsRu(FakeSmsRu):
        def _add(self, message: Any) -> Any:
            message.status = self.DELIVERED
            return super()._add(message)

    return DeliveringSmsRu(balance=10.0**9)


def _make_portal(cloud: Any, carrier: Any, burst: float, rate: float) -> tuple[Any, Any, Any]:
    from messageservice.models import ProviderAccount
    from oauth.tokens import TokenGrant, store_tokens
    from tenants.models import Portal, hash_application_token
    from tests.fakes.b24_messageservice import install_messageservice

    fake = install_messageservice(cloud.create_portal())
    fake.set_bucket(burst, rate)
    portal = Portal.objects.create(
        member_id=fake.member_id, domain=fake.domain, rest_endpoint=fake.client_endpoint, status=Portal.Status.ACTIVE,
        phone_region="RU", license="ru_pro", rate_plan=Portal.RatePlan.STANDARD,
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


def send_id(fake: Any) -> str:
    """A message Bitrix24 created (so status.update finds it)."""
    from tests.fakes.b24_messageservice import send_from_bitrix24

    return send_from_bitrix24(fake, SENDER_CODE, "+79991234567", "bench", check_registered=False)["message_id"]


# -- processes ---------------------------------------------------------------------------------------------
def _acceptor(jobs: list[tuple[int, int, str]], out: Any) -> None:
    """Store messages as the handler does (one transaction each; send_message published on commit)."""
    from django.db import connections

    use_inherited_database()
    connections.close_all()
    from messageservice.models import ProviderAccount
    from messageservice.sending import accept

    accounts = {a.pk: a for a in ProviderAccount.objects.select_related("portal")
                .filter(pk__in={account_id for _p, account_id, _m in jobs})}
    stored = 0
    for index, (_portal_id, account_id, message_id) in enumerate(jobs):
        account = accounts[account_id]
        _message, created = accept(account.portal, account, message_id=message_id, to=f"+7999{index % 10**7:07d}",
                                   body="Your order has shipped.", bindings=[{"OWNER_TYPE_ID": 3, "OWNER_ID": 123}],
                                   author_user_id=1, origin="crm", meta={"module_id": "crm"})
        stored += int(created)
    connections.close_all()
    out.put(stored)


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


def _start_worker(index: int, queue: str, concurrency: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "celery", "-A", "benchmarks._pipeline_worker", "worker", "-Q", queue,
           "-n", f"{queue}-{index}@%h", "-P", "prefork", "--concurrency", str(concurrency), "--loglevel", "WARNING",
           "--without-gossip", "--without-mingle", "--without-heartbeat"]
    with open(log, "ab") as handle:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,  # noqa: S603
                                start_new_session=True)


def _wait_ready(procs: list[subprocess.Popen[bytes]], concurrency: int, timeout: float = 120) -> None:
    """Until each worker has forked its pool (its children exist)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a Celery worker exited during start-up (see its log)")
        if all(len(_children(p.pid)) >= concurrency for p in procs):
            time.sleep(1.0)  # the pool's processes finish importing
            return
        time.sleep(0.2)
    raise RuntimeError("Celery workers did not start in time")


def _stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()  # warm shutdown: the main process lets its pool finish the running task
    for proc in procs:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: this worker and its pool only
            proc.wait(timeout=10)


# -- main --------------------------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks status_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--portals", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (each a prefork pool)")
    parser.add_argument("--concurrency", type=int, default=2, help="pool processes per worker (Procfile: 2)")
    parser.add_argument("--acceptors", type=int, default=2, help="processes storing the messages")
    parser.add_argument("--burst", type=int, default=50)
    parser.add_argument("--rate", type=float, default=2.0)
    parser.add_argument("--beat-interval", type=float, default=1.0,
                        help="seconds between the stand-in beat's dispatch_status_polls/pushes")
    parser.add_argument("--naive", type=int, default=600, help="messages for the naive baseline (then projected)")
    parser.add_argument("--naive-portals", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=3600, help="give up waiting for the statuses after this")
    args = parser.parse_args(argv)
    if args.naive < 1:  # a run without its baseline printed a made-up projection from zero messages
        parser.error("--naive must be at least 1: every run measures its baseline")

    setup_django()
    from django.conf import settings
    from django.db import connections
    from django.db.models import Count, Q

    from b24portal.celery import app
    from messageservice import delivery
    from messageservice.models import Message
    from oauth import ratelimit
    from tests.fakes.b24_messageservice import status_updates
    from tests.fakes.bitrix24 import FakeBitrix24Cloud

    queue = f"bench-status-{uuid.uuid4().hex[:8]}"
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queue
    app.conf.task_routes = None
    per_portal = math.ceil(args.messages / args.portals)
    log = Path(ROOT) / "var" / f"{queue}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    workers: list[subprocess.Popen[bytes]] = []
    peaks: dict[int, int] = {}
    done_at: dict[str, float | None] = dict.fromkeys(STAGES)
    counts: dict[str, int] = dict.fromkeys(STAGES, 0)
    carrier = _delivering_smsru()
    try:
        with scratch_database("bench_status") as db_name, FakeBitrix24Cloud(
                client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET) as cloud:
            settings.B24_OAUTH_URL, settings.B24_SERVER_ENDPOINT = cloud.oauth_url, cloud.server_endpoint
            portals = [_make_portal(cloud, carrier, args.burst, args.rate) for _ in range(args.portals)]
            bucket = ratelimit.bucket_for(portals[0][1])
            jobs: list[tuple[int, int, str]] = []
            for fake, portal, account in portals:  # Bitrix24 creates the messages (status.update finds them)
                jobs.extend((portal.pk, account.pk, send_id(fake)) for _ in range(per_portal))
            jobs = jobs[:args.messages]
            total = len(jobs)
            connections.close_all()
            env = {**os.environ, "BENCH_DATABASE_NAME": db_name, "BENCH_CELERY_QUEUE": queue,
                   "BENCH_B24_OAUTH_URL": cloud.oauth_url, "BENCH_B24_SERVER_ENDPOINT": cloud.server_endpoint,
                   "TEST_DATABASE_URL": os.environ["DATABASE_URL"], "TEST_REDIS_URL": os.environ["REDIS_URL"],
                   "DJANGO_SETTINGS_MODULE": "tests.settings", "BENCH_FIRST_POLL_SECONDS": "0"}
            workers = [_start_worker(i, queue, args.concurrency, env, log) for i in range(args.workers)]
            _wait_ready(workers, args.concurrency)

            # -- the pipeline: accept, send, poll, push ------------------------------------------------
            ctx = multiprocessing.get_context("fork")
            accepted_out = ctx.Queue()
            started = time.monotonic()
            acceptors = [ctx.Process(target=_acceptor, args=(part, accepted_out))
                         for part in split_evenly(jobs, args.acceptors)]
            for proc in acceptors:
                proc.start()
            stop_beat = threading.Event()

            def beat() -> None:
                while not stop_beat.wait(args.beat_interval):
                    delivery.dispatch_status_polls.delay()
                    delivery.dispatch_status_pushes.delay()

            # The progress query counts every row: at 100,000 messages four times a second it would take a
            # good part of a core from the system measured, so a large run looks once a second.
            monitor_interval = 0.25 if total <= 10_000 else 1.0
            beat_thread = threading.Thread(target=beat, daemon=True)
            beat_thread.start()
            try:
                while time.monotonic() - started < args.timeout:
                    now = time.monotonic() - started
                    row = Message.objects.aggregate(
                        accepted=Count("id"), sent=Count("id", filter=Q(state=Message.State.HANDED_TO_CARRIER)),
                        polled=Count("id", filter=Q(status="delivered")),
                        pushed=Count("id", filter=Q(pushed_status="delivered", push_due=False)))
                    counts.update(row)
                    if row["pushed"] >= total:
                        counts["in portals"] = sum(1 for fake, _p, _a in portals for u in status_updates(fake)
                                                   if u["STATUS"] == "delivered")
                    for stage in STAGES:
                        if done_at[stage] is None and counts[stage] >= total:
                            done_at[stage] = now
                    if done_at["in portals"] is not None:
                        break
                    time.sleep(monitor_interval)
                peaks = _peaks(p.pid for p in workers)  # before the workers stop
            finally:
                stop_beat.set()
                beat_thread.join(timeout=10)
                stored = sum(accepted_out.get(timeout=600) for _ in acceptors)
                for proc in acceptors:
                    proc.join(timeout=30)
                _stop_workers(workers)
            wall = done_at["in portals"]
            batch_requests = [fake.count("batch") for fake, _p, _a in portals]
            single_requests = sum(fake.count(COMMAND, in_batch=False) for fake, _p, _a in portals)
            rejected = sum(fake.rejected_503 for fake, _p, _a in portals)
            carrier_sends = len(carrier.requests_for("send"))
            carrier_status_requests = len(carrier.requests_for("status"))

            # -- the naive baseline: one status.update per message ------------------------------------
            naive_set = portals[:max(1, min(args.naive_portals, len(portals)))]
            naive_per_portal = math.ceil(args.naive / len(naive_set))
            naive_ids = [[send_id(fake) for _ in range(naive_per_portal)] for fake, _p, _a in naive_set]
            for fake, portal, _a in naive_set:
                fake.set_bucket(args.burst, args.rate)
                with fake.lock:
                    fake.requests.clear()
                    fake.rejected_503 = 0
                ratelimit.reset(portal)
            connections.close_all()
            naive_out = ctx.Queue()
            naive_started = time.monotonic()
            naive_procs = [ctx.Process(target=_naive_worker, args=(portal.pk, ids, naive_out))
                           for (_f, portal, _a), ids in zip(naive_set, naive_ids, strict=True)]
            for proc in naive_procs:
                proc.start()
            naive_errors = sum(naive_out.get(timeout=args.timeout) for _ in naive_procs)
            naive_wall = time.monotonic() - naive_started
            for proc in naive_procs:
                proc.join(timeout=30)
            naive_requests = [fake.count(COMMAND, in_batch=False) for fake, _p, _a in naive_set]
            naive_rejected = sum(fake.rejected_503 for fake, _p, _a in naive_set)
    finally:
        if workers:
            _stop_workers(workers)
        carrier.close()
        with app.connection_for_write() as conn:
            conn.default_channel.client.delete(queue)

    pace = naive_wall / max(max(naive_requests) - bucket.burst, 1)  # seconds per request beyond the burst
    projected_push = pace * max(per_portal - bucket.burst, 0)
    mb = 1024.0
    print(f"\nstatus pipeline end to end: {total} messages over {args.portals} fake portals ({per_portal} each); "
          f"{args.acceptors} accepting processes (messageservice.sending.accept); {args.workers} Celery worker(s) "
          f"× prefork {args.concurrency} on queue {queue}; stand-in beat every {args.beat_interval:g} s; fake SMS.ru "
          f"delivers at once; fake portals' bucket burst {args.burst}, {args.rate:g} req/s (our limiter: burst "
          f"{bucket.burst}, {bucket.rate:g} req/s); progress read every {monitor_interval:g} s")
    print(f"  stored by the acceptors: {stored}")
    print(f"\n{'stage (last message through it)':<34} {'s from start':>12} {'messages/s':>11} {'count':>8}")
    for stage, seconds, rate in stage_rates(total, done_at):
        print(f"{stage:<34} {'-' if seconds is None else f'{seconds:.1f}':>12} "
              f"{'-' if rate is None else f'{rate:.0f}':>11} {counts[stage]:>8}")
    if wall is None:
        print(f"\nNOT FINISHED within {args.timeout:g} s: {counts['in portals']} of {total} statuses in the portals")
    else:
        print(f"\nend to end: {total} messages in {wall:.1f} s = {total / wall:.0f} messages/s")
    print(f"REST requests per portal: {min(batch_requests)}-{max(batch_requests)} batch (target ceil({per_portal}/50) "
          f"= {math.ceil(per_portal / 50)}), {single_requests} single calls; 503s: {rejected} (target 0)")
    print(f"bound from the portals' limits: {push_bound(per_portal, bucket.burst, bucket.rate):.1f} s of pushing per "
          f"portal at least (ceil({per_portal}/50) batch calls, our limiter's burst {bucket.burst} then "
          f"{bucket.rate:g} req/s; portals are pushed in parallel)")
    print(f"carrier requests: {carrier_sends} send, {carrier_status_requests} status "
          f"(SMS.ru: 100 ids each → {math.ceil(total / 100)} minimum)")
    print("\nworker peak RSS (VmHWM, read before stopping):")
    for pid, kb in sorted(peaks.items()):
        role = "main" if pid in {p.pid for p in workers} else "pool"
        print(f"  pid {pid:<8} {role:<5} {kb / mb:7.1f} MB")
    print(f"\nbaseline, push stage only: naive one call per message, measured {sum(len(i) for i in naive_ids)} messages "
          f"over {len(naive_set)} portals: {naive_wall:.1f} s, {max(naive_requests)} requests/portal, "
          f"{naive_rejected} 503s, {naive_errors} errors; projected to {per_portal} messages/portal: "
          f"≈ {projected_push:.0f} s (pace {pace:.3f} s per request beyond the burst) — batched end to end: "
          f"{'-' if wall is None else f'{wall:.1f} s'}")
    print(f"worker log: {log}")
    return 0 if wall is not None else 1
