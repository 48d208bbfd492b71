"""Benchmark: the messageservice HANDLER under gunicorn, beside the fair baseline in the same gunicorn.

    python -m benchmarks handler [--duration 10] [--warmup 2] [--rounds 2] [--concurrency 32] [--workers 4]
                                 [--worker-class sync] [--threads 1]

A scratch PostgreSQL database gets one active portal with one SMS.ru provider account; then gunicorn
(DEBUG off, tests.settings, persistent DB connections) serves the real app and `wrk` drives
`POST /b24/messageservice/<handler_key>/` with the exact form Bitrix24 sends (built by
tests.fakes.b24_messageservice.send_from_bitrix24, auth block included, so the application-token check
runs) and a unique 32-hex message_id per request.

The handler publishes nothing in the request: it stores the message as owed a dispatch and NOTIFYs the
SMS worker's outbox dispatcher (messageservice.outbox). A dispatcher process runs the same drain loop
(`OutboxDispatcher`: LISTEN, drain 0.1 s after a notification and every SMS_DISPATCH_POLL_SECONDS) beside
gunicorn for the whole run, on the same machine, so its CPU counts against the handler; it publishes into
a queue of its own. After the load the benchmark waits until the outbox is empty, stops the dispatcher and
only then reads that queue: every stored message must have been published exactly once.

The fair baseline (issue 11) is served by the same gunicorn workers (same settings, same run): the
simplest Django view (`/bench/django-baseline/<key>/`, through the project's middleware) doing only the
durable work — read the form, one raw indexed SELECT (portal by handler key joined to the active sender),
one INSERT into a table with a unique (portal, message_id), commit, one Celery `apply_async` of
`send_message` in the request. Baseline and handler alternate for `--rounds` rounds; extra lines (one round
each): the same baseline work as a bare WSGI function without Django (`/bench/baseline/<key>/`) and
`GET /health/` (no I/O). Every send goes to a queue of its own that no worker reads (deleted at the end).
Printed: requests/s and p50/p99 of each, the handler/baseline ratio (target ≥ 0.8) and the handler's p99
(target < 50 ms), stored against published messages, then a query profile of one handler request.

`wrk` comes from Debian (`scripts/ensure-wrk.sh`); without it a Python client runs instead (and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from .common import ROOT, closed_loop, scratch_database, setup_django

SENDER_CODE = "bench_sms"
MESSAGE_ID_SENTINEL = "f" * 32  # replaced per request by the load generator


# -- the WSGI app gunicorn loads: `benchmarks.handler:wsgi_app()` ---------------------------------------
def _use_bench_queue(queue: str) -> None:
    """tests.settings runs Celery eagerly; here the handler must only *queue* the send (as in production),
    into a queue of its own so nothing else on this Redis sees or consumes it."""
    from django.conf import settings

    from b24portal.celery import app

    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.task_default_queue = queue
    app.conf.task_routes = None


BASELINE_PREFIX = "/bench/baseline/"
BASELINE_TABLE = "bench_baseline_message"


def _store_durably(key: str, form: Any) -> int | None:
    """The durable work both baselines share: one raw indexed SELECT, one INSERT (unique (portal,
    message_id)), commit. Returns the new row's id, or None for a repeated message_id."""
    from django.db import connection, transaction

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT a.id, p.id FROM messageservice_provideraccount a JOIN tenants_portal p "
                       "ON p.id = a.portal_id WHERE p.handler_key = %s AND a.code = %s AND a.is_active",
                       [key, form["code"]])
        account_id, portal_id = cursor.fetchone()
        cursor.execute(f"INSERT INTO {BASELINE_TABLE} (portal_id, account_id, message_id, recipient, body, "  # noqa: S608 (constant)
                       "created_at) VALUES (%s, %s, %s, %s, %s, now()) ON CONFLICT (portal_id, message_id) "
                       "DO NOTHING RETURNING id",
                       [portal_id, account_id, form["message_id"], form["message_to"], form["message_body"]])
        row = cursor.fetchone()
    return row[0] if row is not None else None


def _baseline_view(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The fair baseline: form → raw SELECT → INSERT (unique (portal, message_id)) → commit → apply_async."""
    from urllib.parse import parse_qsl

    from messageservice.tasks import send_message

    key = environ["PATH_INFO"][len(BASELINE_PREFIX):].strip("/")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    form = dict(parse_qsl(environ["wsgi.input"].read(length).decode()))
    row_id = _store_durably(key, form)
    if row_id is not None:
        send_message.apply_async(args=[row_id])
    body = json.dumps({"ok": True, "message_id": form["message_id"], "duplicate": row_id is None}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def baseline_view(request: Any, key: str) -> Any:
    """The fair baseline as the issue defines it: the simplest Django view doing the same durable work —
    read the form, one raw indexed SELECT, one INSERT (unique (portal, message_id)), commit, one
    Celery `apply_async` — through the project's own middleware stack."""
    from django.http import JsonResponse

    from messageservice.tasks import send_message

    form = request.POST
    row_id = _store_durably(key, form)
    if row_id is not None:
        send_message.apply_async(args=[row_id])
    return JsonResponse({"ok": True, "message_id": form["message_id"], "duplicate": row_id is None})


def _urlpatterns() -> list[Any]:
    from django.urls import path
    from django.views.decorators.csrf import csrf_exempt

    from b24portal.urls import urlpatterns as project

    return [path("bench/django-baseline/<str:key>/", csrf_exempt(baseline_view)), *project]


def __getattr__(name: str) -> Any:  # `urlpatterns`, built on first use (Django is set up by then)
    if name == "urlpatterns":
        return _urlpatterns()
    raise AttributeError(name)


def wsgi_app() -> Any:
    """Gunicorn's app factory (each worker): Django on tests.settings against the scratch database
    (TEST_DATABASE_URL), with Celery dispatching to the benchmark's queue; the Django baseline view added
    to the project's URLs, and the bare-WSGI baseline beside the Django app."""
    setup_django()
    _use_bench_queue(os.environ["BENCH_CELERY_QUEUE"])
    from django.conf import settings
    from django.core.wsgi import get_wsgi_application

    settings.ROOT_URLCONF = "benchmarks.handler"
    django_app = get_wsgi_application()

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        if environ.get("PATH_INFO", "").startswith(BASELINE_PREFIX):
            return _baseline_view(environ, start_response)
        return django_app(environ, start_response)

    return app


def run_dispatcher() -> None:
    """The dispatcher process (`python -c "from benchmarks.handler import run_dispatcher; run_dispatcher()"`):
    the SMS worker's drain loop, publishing into BENCH_CELERY_QUEUE, until SIGTERM."""
    import threading

    setup_django()
    _use_bench_queue(os.environ["BENCH_CELERY_QUEUE"])
    from django.conf import settings

    from messageservice.outbox import OutboxDispatcher

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    dispatcher = OutboxDispatcher(poll_seconds=float(settings.SMS_DISPATCH_POLL_SECONDS))
    dispatcher.start()
    print("listening" if dispatcher.listening.wait(30) else "not listening", flush=True)
    stop.wait()
    dispatcher.stop()
    print(f"published {dispatcher.published} in {dispatcher.drains} drains", flush=True)


def _start_dispatcher(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-c", "from benchmarks.handler import run_dispatcher; run_dispatcher()"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=out,  # noqa: S603 (our own argv)
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dispatcher exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        if "listening" in log.read_text():
            return proc
        time.sleep(0.2)
    raise RuntimeError(f"dispatcher did not listen within 30 s:\n{log.read_text()[-3000:]}")


def _wait_until_drained(seconds: float) -> int:
    """Messages still owed a dispatch once the outbox is empty or `seconds` have passed."""
    from messageservice.models import Message

    deadline = time.monotonic() + seconds
    while True:
        owed = Message.objects.filter(dispatch_pending=True).count()
        if owed == 0 or time.monotonic() > deadline:
            return owed
        time.sleep(0.2)


def _create_baseline_table() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {BASELINE_TABLE} (id bigserial PRIMARY KEY, portal_id bigint NOT NULL, "
                       "account_id bigint NOT NULL, message_id varchar(64) NOT NULL, recipient varchar(64) NOT NULL, "
                       "body text NOT NULL, created_at timestamptz NOT NULL, UNIQUE (portal_id, message_id))")


# -- set-up ----------------------------------------------------------------------------------------------
def _setup_portal(fake: Any) -> tuple[Any, Any]:
    from messageservice.models import ProviderAccount
    from tenants.models import Portal, hash_application_token
    from tests.fakes.carriers import FakeSmsRu

    portal = Portal.objects.create(member_id=fake.member_id, domain=fake.domain, rest_endpoint=fake.client_endpoint,
                                   status=Portal.Status.ACTIVE, phone_region="RU", license="ru_pro",
                                   application_token_hash=hash_application_token(fake.application_token))
    # Created directly (not through do_save_account): the handler only needs an active account with this
    # code, and registering the sender in Bitrix24 is not what is measured.
    account = ProviderAccount.objects.create(
        portal=portal, carrier="smsru", code=SENDER_CODE, name="Bench SMS", credentials={"api_id": FakeSmsRu.API_ID},
        base_url="http://127.0.0.1:9", registration_state=ProviderAccount.Registration.REGISTERED)
    return portal, account


def _payload_template(fake: Any) -> str:
    from tests.fakes.b24_messageservice import send_from_bitrix24

    payload = send_from_bitrix24(fake, SENDER_CODE, "+79991234567", "Your order 1234 has shipped. Thank you!",
                                 message_id=MESSAGE_ID_SENTINEL, check_registered=False)
    body = urlencode(payload)
    assert body.count(MESSAGE_ID_SENTINEL) == 1
    return body


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_gunicorn(port: int, env: dict[str, str], args: argparse.Namespace, log: Path) -> subprocess.Popen[bytes]:
    cmd = [str(Path(sys.executable).parent / "gunicorn"), "benchmarks.handler:wsgi_app()",
           "--bind", f"127.0.0.1:{port}", "--workers", str(args.workers), "--worker-class", args.worker_class,
           "--threads", str(args.threads), "--backlog", "2048", "--timeout", "60", "--keep-alive", "5",
           "--log-level", "warning", "--chdir", ROOT]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd,  # noqa: S603 (our own argv)
                                 env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            import requests

            if requests.get(f"http://127.0.0.1:{port}/health/", timeout=2).status_code == 200:
                return proc
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer within 30 s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)  # its own session: the master and its workers only
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


# -- load generation -------------------------------------------------------------------------------------
WRK_LUA = r"""
-- generated by benchmarks/handler.py
local method, path, prefix, suffix, nonce = %s, %s, %s, %s, %s
local counter, tid = 0, 0
local threads = {}
local next_tid = 0

function setup(thread)
  thread:set("tid", next_tid)
  next_tid = next_tid + 1
  table.insert(threads, thread)
end

function init(args)
  tid = tonumber(wrk.thread:get("tid")) or 0
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  if method == "GET" then
    return wrk.format("GET", path)
  end
  counter = counter + 1
  -- 32 hex: 12-hex run nonce + 4-hex thread + 16-hex counter (unique per request and per run)
  local id = nonce .. string.format("%%04x%%016x", tid, counter)
  return wrk.format("POST", path, nil, prefix .. id .. suffix)
end

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    'WRKJSON {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, "mean_us": %%.1f, ' ..
    '"max_us": %%d, "non2xx": %%d, "connect_errors": %%d, "read_errors": %%d, "timeouts": %%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    latency.max, non2xx, summary.errors.connect, summary.errors.read, summary.errors.timeout))
end
"""


def _lua_str(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid Lua string literal for this ASCII text


def _wrk(url_base: str, method: str, path: str, body_template: str, nonce: str, seconds: float,
         concurrency: int, threads: int, workdir: Path) -> dict[str, Any]:
    prefix, suffix = body_template.split(MESSAGE_ID_SENTINEL) if body_template else ("", "")
    script = workdir / f"{method.lower()}-{nonce}.lua"
    script.write_text(WRK_LUA % (_lua_str(method), _lua_str(path), _lua_str(prefix), _lua_str(suffix),
                                 _lua_str(nonce)))
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(round(seconds), 1)}s",
           "--timeout", "10s", "-s", str(script), url_base + path]
    out = subprocess.run(cmd, capture_output=True, text=True,  # noqa: S603 (our own argv)
                         timeout=seconds + 60, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    stats = json.loads(line[len("WRKJSON "):])
    return {"requests": stats["requests"], "seconds": stats["duration_us"] / 1e6,
            "rps": stats["requests"] / (stats["duration_us"] / 1e6), "p50_ms": stats["p50_us"] / 1000,
            "p99_ms": stats["p99_us"] / 1000, "mean_ms": stats["mean_us"] / 1000, "max_ms": stats["max_us"] / 1000,
            "errors": stats["non2xx"] + stats["connect_errors"] + stats["read_errors"] + stats["timeouts"]}


def _python_load(url_base: str, method: str, path: str, body_template: str, seconds: float,
                 concurrency: int) -> dict[str, Any]:
    """Fallback when wrk is missing (a lower bound: see common.closed_loop)."""

    def send(session: Any, unique: str) -> int:
        if method == "GET":
            return int(session.get(url_base + path, timeout=10).status_code)
        body = body_template.replace(MESSAGE_ID_SENTINEL, unique)
        return int(session.post(url_base + path, data=body, timeout=10,
                                headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code)

    return closed_loop(send, seconds, concurrency)


# -- profile ---------------------------------------------------------------------------------------------
def _profile_one(path: str, body_template: str, repeats: int) -> tuple[list[str], float]:
    """Queries of one handler request (Django test client in this process, same settings) and the mean
    in-process time of `repeats` requests (no HTTP, no gunicorn: the app's own cost)."""
    from django.db import connection
    from django.test import Client

    client = Client(HTTP_HOST="127.0.0.1")
    nonce = uuid.uuid4().hex[:12]

    def post(i: int) -> int:
        body = body_template.replace(MESSAGE_ID_SENTINEL, f"{nonce}{i:020x}")
        return client.post(path, data=body, content_type="application/x-www-form-urlencoded").status_code

    post(0)  # warm caches (URL resolver, ContentType, etc.)
    captured: list[str] = []

    def record(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        captured.append(sql)
        return execute(sql, params, many, context)

    # execute_wrapper sees every statement of this connection, whatever DEBUG and the request signals do
    with connection.execute_wrapper(record):
        status = post(1)
    assert status == 200, status
    started = time.perf_counter()
    for i in range(2, repeats + 2):
        post(i)
    mean_ms = (time.perf_counter() - started) / repeats * 1000
    return captured, mean_ms


# -- main ------------------------------------------------------------------------------------------------
def _queue_length(queue: str) -> int:
    from b24portal.celery import app

    with app.connection_for_write() as conn:
        return int(conn.default_channel.client.llen(queue))


def _baseline_rows() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {BASELINE_TABLE}")  # noqa: S608 (constant)
        return int(cursor.fetchone()[0])


def _delete_queue(queue: str) -> None:
    from b24portal.celery import app

    with app.connection_for_write() as conn:
        conn.default_channel.client.delete(queue)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks handler", description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per endpoint and round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per endpoint (not measured)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of baseline and handler")
    parser.add_argument("--concurrency", type=int, default=32, help="open connections")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    parser.add_argument("--worker-class", default="sync", choices=["sync", "gthread"])
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker (gthread)")
    parser.add_argument("--profile-requests", type=int, default=200,
                        help="in-process handler requests timed for the profile")
    parser.add_argument("--python-client", action="store_true", help="use the Python client even if wrk exists")
    args = parser.parse_args(argv)

    setup_django()
    from django.conf import settings
    from django.db import connections

    from messageservice.models import Message
    from tests.fakes.bitrix24 import FakeBitrix24Cloud

    have_wrk = shutil.which("wrk") is not None and not args.python_client
    queue = f"bench-handler-{uuid.uuid4().hex[:8]}"
    outbox_queue = f"{queue}-outbox"  # the dispatcher's publishes, counted apart from the baselines'
    _use_bench_queue(queue)
    gunicorn: subprocess.Popen[bytes] | None = None
    dispatcher: subprocess.Popen[bytes] | None = None
    results: dict[str, dict[str, Any]] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench-handler-"))
    try:
        with scratch_database("bench_handler") as db_name, FakeBitrix24Cloud(
                client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET) as cloud:
            fake = cloud.create_portal()
            portal, _account = _setup_portal(fake)
            body_template = _payload_template(fake)
            handler_path = f"/b24/messageservice/{portal.handler_key}/"
            baseline_path = f"/bench/django-baseline/{portal.handler_key}/"
            bare_path = f"{BASELINE_PREFIX}{portal.handler_key}/"
            _create_baseline_table()
            connections.close_all()

            base_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0]
            env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "BENCH_CELERY_QUEUE": queue,
                   "TEST_DATABASE_URL": f"{base_url}/{db_name}", "BENCH_DATABASE_NAME": db_name,
                   "PYTHONPATH": ROOT, "DEBUG": "false"}
            dispatcher = _start_dispatcher({**env, "BENCH_CELERY_QUEUE": outbox_queue}, workdir / "dispatcher.log")
            port = _free_port()
            gunicorn = _start_gunicorn(port, env, args, workdir / "gunicorn.log")
            url_base = f"http://127.0.0.1:{port}"

            def load(method: str, path: str, template: str, seconds: float) -> dict[str, Any]:
                nonce = uuid.uuid4().hex[:12]
                if have_wrk:
                    return _wrk(url_base, method, path, template, nonce, seconds, args.concurrency,
                                args.wrk_threads, workdir)
                return _python_load(url_base, method, path, template, seconds, args.concurrency)

            endpoints = {"GET /health/ (no I/O)": ("GET", "/health/", ""),
                         "bare WSGI baseline": ("POST", bare_path, body_template),
                         "fair baseline": ("POST", baseline_path, body_template),
                         "POST handler": ("POST", handler_path, body_template)}
            for method, path, template in endpoints.values():
                if args.warmup > 0:
                    load(method, path, template, args.warmup)
            rounds: dict[str, list[dict[str, Any]]] = {label: [] for label in endpoints}
            for _ in range(args.rounds):
                for label in ("fair baseline", "POST handler"):
                    rounds[label].append(load(*endpoints[label], args.duration))
            for label in ("bare WSGI baseline", "GET /health/ (no I/O)"):
                rounds[label].append(load(*endpoints[label], args.duration))
            for label, runs in rounds.items():
                total = sum(r["requests"] for r in runs)
                seconds = sum(r["seconds"] for r in runs)
                results[label] = {"requests": total, "seconds": seconds, "rps": total / seconds,
                                  "p50_ms": sorted(r["p50_ms"] for r in runs)[len(runs) // 2],
                                  "p99_ms": max(r["p99_ms"] for r in runs),
                                  "mean_ms": sum(r["mean_ms"] * r["requests"] for r in runs) / max(total, 1),
                                  "max_ms": max(r["max_ms"] for r in runs), "errors": sum(r["errors"] for r in runs),
                                  "rounds": [round(r["rps"]) for r in runs]}
            _stop(gunicorn)
            gunicorn = None
            # Counted only once the dispatcher has drained the outbox and stopped (issue 15: "stored" was
            # once printed before the queue was read).
            owed = _wait_until_drained(120)
            _stop(dispatcher)
            dispatcher = None
            dispatcher_said = (workdir / "dispatcher.log").read_text().strip().splitlines()[-1:]
            stored = Message.objects.filter(portal=portal).count()
            published = _queue_length(outbox_queue)
            baseline_rows = _baseline_rows()
            baseline_queued = _queue_length(queue)
            queries, inproc_ms = _profile_one(handler_path, body_template, args.profile_requests)
    finally:
        _stop(gunicorn)
        _stop(dispatcher)
        try:
            _delete_queue(queue)
            _delete_queue(outbox_queue)
        except Exception as exc:  # the report matters more than the clean-up of a throwaway queue
            print(f"warning: could not delete Redis queue {queue}: {exc}", file=sys.stderr)
        shutil.rmtree(workdir, ignore_errors=True)

    base, handler = results["fair baseline"], results["POST handler"]
    print(f"handler benchmark: gunicorn {args.workers} × {args.worker_class}"
          f"{f' ({args.threads} threads)' if args.worker_class == 'gthread' else ''}, DEBUG off, PostgreSQL "
          f"CONN_MAX_AGE={settings.DATABASES['default'].get('CONN_MAX_AGE')}, {os.cpu_count()} CPUs; "
          f"load: {'wrk' if have_wrk else 'Python client (wrk not available: figures are a lower bound)'} "
          f"{args.concurrency} connections, {args.rounds} alternating round(s) of {args.duration:g} s after "
          f"{args.warmup:g} s warm-up; p50 = median of rounds, p99 = worst round")
    print(f"{'endpoint':<24} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'mean ms':>8} {'max ms':>7}"
          f" {'errors':>6}  req/s per round")
    for label, row in results.items():
        print(f"{label:<24} {row['requests']:>9} {row['rps']:>8.0f} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f}"
              f" {row['mean_ms']:>8.1f} {row['max_ms']:>7.1f} {row['errors']:>6}  {row['rounds']}")
    share = handler["rps"] / base["rps"] if base["rps"] else 0.0
    print(f"handler / fair baseline throughput: {share:.2f}×  (target ≥ 0.8×: {'met' if share >= 0.8 else 'NOT met'})")
    print(f"p99: handler {handler['p99_ms']:.1f} ms, fair baseline {base['p99_ms']:.1f} ms  (handler target < 50 ms: "
          f"{'met' if handler['p99_ms'] < 50 else 'NOT met'})")
    print(f"handler messages stored: {stored} (warm-up included); published by the dispatcher: {published}; "
          f"still owed: {owed}  ({'every stored message published once' if published == stored and not owed else 'MISMATCH'}"
          f"; read after the drain; no worker ran; queue deleted)")
    print(f"dispatcher process (beside gunicorn for the whole run): {' '.join(dispatcher_said) or 'no report'}")
    print(f"baseline rows stored: {baseline_rows}; their sends queued in the request: {baseline_queued}")
    mean_bound = 1000 * args.concurrency / handler["rps"] if handler["rps"] else 0.0
    print(f"Little's law (closed loop, {args.concurrency} connections): mean latency = {args.concurrency} / "
          f"throughput: handler {mean_bound:.0f} ms mean at {handler['rps']:.0f} req/s; a mean under 50 ms needs "
          f"> {args.concurrency / 0.05:.0f} req/s (p99 under 50 ms needs more)")
    print(f"\nprofile of one handler request (Django test client, same settings, no HTTP): {len(queries)} queries;"
          f" mean {inproc_ms:.2f} ms per request over {args.profile_requests} requests in one process")
    for sql in queries:
        print(f"  {sql[:150]}")
    return 0
