"""The shared limiter (GCRA in Redis / file fallback), 503 and 429 handling, and the operating guard."""

from __future__ import annotations

import multiprocessing
import time

import pytest

from oauth import ratelimit
from oauth.client import PortalClient, retry_delay
from oauth.errors import B24OperationLimit, B24RateLimited
from tenants.models import Portal
from tests.oauth.conftest import register_echo

pytestmark = pytest.mark.django_db


def test_the_bucket_is_the_plan_limit_scaled_by_the_headroom(settings, portal):
    settings.B24_RATE_HEADROOM = 0.8
    assert ratelimit.bucket_for(portal) == ratelimit.Bucket(rate=1.6, burst=40)
    portal.rate_plan = Portal.RatePlan.ENTERPRISE
    assert ratelimit.bucket_for(portal) == ratelimit.Bucket(rate=4.0, burst=200)


@pytest.mark.parametrize("backend_name", ["redis", "file"])
def test_the_burst_is_free_then_permits_are_spaced_by_the_rate(portal, limiter_clock, backend_name, tmp_path,
                                                               monkeypatch):
    if backend_name == "file":
        monkeypatch.setattr(ratelimit, "_backend", ratelimit._FileBackend(tmp_path))
    # 2/s and 50 at 0.8 headroom: 1.6/s (one permit per 0.625 s) after a burst of 40; time stands still
    waits = [ratelimit.acquire(portal, max_wait=60) for _ in range(42)]
    assert waits[:40] == [0.0] * 40
    assert waits[40:] == [0.625, 1.25]
    limiter_clock.advance(1.25)  # the bucket drains by two permits' worth
    assert ratelimit.acquire(portal, max_wait=60) == 0.625


def test_a_caller_that_may_not_wait_gets_retry_after_and_reserves_nothing(portal, limiter_clock):
    for _ in range(40):
        ratelimit.acquire(portal, max_wait=0)
    with pytest.raises(B24RateLimited) as caught:
        ratelimit.acquire(portal, max_wait=0)
    assert caught.value.code == "RATE_LIMIT_WAIT" and caught.value.retry_after == 0.625
    assert ratelimit.acquire(portal, max_wait=5) == 0.625  # nothing was reserved (else it would be 1.25)
    assert 1.0 <= retry_delay(caught.value) <= 2.0


def test_a_batch_of_50_commands_costs_one_permit(client_for, fake_portal, portal):
    register_echo(fake_portal)
    client_for().batch({f"k{i}": ("test.echo", {}) for i in range(50)})
    waits = [ratelimit.acquire(portal, max_wait=60) for _ in range(40)]
    assert waits[:39] == [0.0] * 39 and waits[39] > 0


def _hammer(key: str, count: int, out: multiprocessing.Queue) -> None:  # runs in a child process
    from oauth.ratelimit import Bucket, get_backend

    backend = get_backend()
    for _ in range(count):
        time.sleep(backend.run(key, Bucket(rate=20.0, burst=5), 60.0, -1.0))
        out.put(time.time())


@pytest.mark.parametrize("backend_name", ["redis", "file"])
def test_processes_share_one_bucket(settings, tmp_path, backend_name, monkeypatch):
    if backend_name == "file":
        monkeypatch.setattr(ratelimit, "_backend", ratelimit._FileBackend(tmp_path))
    else:
        monkeypatch.setattr(ratelimit, "_backend", None)
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    key = f"shared-{backend_name}-{time.time()}"
    workers = [ctx.Process(target=_hammer, args=(key, 10, out)) for _ in range(4)]
    started = time.time()
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    stamps = sorted(out.get(timeout=5) for _ in range(40))
    # 40 permits at 20/s after a burst of 5: at least (40 - 5) / 20 = 1.75 s, whoever asks.
    assert stamps[-1] - started >= 1.7
    # and never more than burst + rate * t permits by any time t
    for i, stamp in enumerate(stamps):
        assert i + 1 <= 5 + 20 * (stamp - started) + 1


def test_a_503_slows_every_process_and_the_request_is_sent_again(client_for, fake_portal, portal, settings,
                                                                 limiter_clock, monkeypatch):
    settings.B24_RATE_503_BACKOFF = 0.2
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # waiting for a permit moves the limiter's clock, not the wall clock
        slept.append(seconds)
        limiter_clock.advance(seconds)

    monkeypatch.setattr(limiter_clock, "sleep", sleep)
    fake_portal.fail_next("app.info", "QUERY_LIMIT_EXCEEDED", "Too many requests", 503)
    assert client_for(max_wait=5).call("app.info")["ID"] == fake_portal.app_id
    assert [c.http_status for c in fake_portal.calls("app.info")] == [503, 200]
    # the client waited out the penalty (0.1..0.3 s with jitter) and one interval before sending again
    # (Redis keeps the bucket's time to 1e-4 s)
    assert len(slept) == 1 and 0.1 + 0.625 - 1e-3 <= slept[0] <= 0.3 + 0.625 + 1e-3
    # The bucket was pushed forward for everyone: another process must now wait for its permit.
    assert ratelimit.acquire(portal, max_wait=60) > 0


def test_in_a_task_a_limit_raises_retry_after_instead_of_sleeping(portal, fake_portal, settings, limiter_clock,
                                                                  monkeypatch):
    from celery import shared_task

    settings.B24_RATE_TASK_MAX_WAIT = 0
    slept: list[float] = []

    def no_sleep(seconds: float) -> None:
        slept.append(seconds)
        raise AssertionError(f"the task slept {seconds} s for a permit")

    monkeypatch.setattr(limiter_clock, "sleep", no_sleep)
    for _ in range(40):
        ratelimit.acquire(portal, max_wait=0)

    @shared_task
    def probe(portal_id: int) -> str:
        try:
            PortalClient(Portal.objects.get(pk=portal_id)).call("app.info")
        except B24RateLimited as exc:
            return f"retry after {exc.retry_after:.3f}"
        return "sent"

    outcome = probe.apply(args=[portal.pk]).get()
    assert outcome == "retry after 0.625" and slept == []
    assert fake_portal.count("app.info") == 0


def test_operating_is_overwritten_per_method_and_a_method_near_its_limit_is_deferred(client_for, fake_portal):
    fake_portal.register_method("crm.deal.list", lambda p, params, ctx: [])
    fake_portal.set_cost("crm.deal.list", 150.0)
    client = client_for(max_wait=0)
    client.call("crm.deal.list")
    client.call("crm.deal.list")  # running total 300 s: below 85% of 480 (408)
    client.call("crm.deal.list")  # 450 s reported: now above the threshold
    with pytest.raises(B24OperationLimit) as caught:
        client.call("crm.deal.list")
    assert caught.value.code == "OPERATING_DEFERRED" and caught.value.reset_at > time.time()
    assert fake_portal.count("crm.deal.list") == 3  # deferred before sending
    client.call("app.info")  # other methods are not affected
    assert retry_delay(caught.value) >= caught.value.reset_at - time.time()


def test_batch_operating_is_read_per_sub_method_and_the_outer_batch_is_not_counted(client_for, fake_portal, portal):
    from django.core.cache import cache

    fake_portal.register_method("crm.deal.list", lambda p, params, ctx: [])
    fake_portal.set_cost("crm.deal.list", 420.0)
    client_for().batch({"a": "crm.deal.list", "b": "app.info"})
    assert cache.get(f"b24:op:{portal.member_id}:crm.deal.list")[0] == pytest.approx(420.0)
    assert cache.get(f"b24:op:{portal.member_id}:batch") is None
    with pytest.raises(B24OperationLimit):
        client_for(max_wait=0).batch({"x": "crm.deal.list"})
    assert fake_portal.count("batch") == 1


def test_a_429_blocks_that_method_until_its_reset(client_for, fake_portal):
    fake_portal.register_method("crm.deal.list", lambda p, params, ctx: [])
    fake_portal.fail_next("crm.deal.list", "OPERATION_TIME_LIMIT", "blocked", 429)
    with pytest.raises(B24OperationLimit) as first:
        client_for(max_wait=0).call("crm.deal.list")
    assert first.value.code == "OPERATION_TIME_LIMIT" and first.value.retry_after > 0
    with pytest.raises(B24OperationLimit) as second:
        client_for(max_wait=0).call("crm.deal.list")
    assert second.value.code == "OPERATING_DEFERRED"
    assert fake_portal.count("crm.deal.list") == 1
