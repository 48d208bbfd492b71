"""The logic in the issue-15 benchmarks (not their timings): the status pipeline's /proc parsing, stage
rates and work split; the call-log volume benchmark's schedule and its recording through oauth.calllog."""

from __future__ import annotations

import pytest
from django.utils import timezone

from benchmarks import calllog_volume, status_pipeline
from oauth import calllog
from oauth.models import RestCall, RestCallCount, RestCallDaily
from tests.factories import PortalFactory

PROC_STATUS = "Name:\tcelery\nVmPeak:\t  300000 kB\nVmHWM:\t   98765 kB\nVmRSS:\t   90000 kB\n"


def test_status_field_kb_reads_the_peak_and_is_zero_when_absent():
    assert status_pipeline.status_field_kb(PROC_STATUS) == 98765
    assert status_pipeline.status_field_kb(PROC_STATUS, "VmRSS") == 90000
    assert status_pipeline.status_field_kb("Name:\tx\n") == 0
    assert status_pipeline.status_field_kb("VmHWM:\n") == 0


def test_push_bound_is_the_batch_calls_beyond_the_burst_at_the_limiters_rate():
    assert status_pipeline.push_bound(1000, burst=40, rate=1.6) == 0.0  # 20 calls fit in the burst
    assert status_pipeline.push_bound(5000, burst=40, rate=1.6) == (100 - 40) / 1.6
    assert status_pipeline.push_bound(101, burst=0, rate=2.0) == 1.5  # ceil(101/50) = 3 calls


def test_stage_rates_are_messages_over_the_time_to_each_stage_and_none_when_not_reached():
    rates = status_pipeline.stage_rates(1000, {"accepted": 2.0, "sent": 4.0, "polled": 5.0, "pushed": None})
    assert rates[:4] == [("accepted", 2.0, 500.0), ("sent", 4.0, 250.0), ("polled", 5.0, 200.0),
                         ("pushed", None, None)]
    assert rates[4] == ("in portals", None, None)


def test_split_evenly_deals_every_item_once_into_non_empty_parts():
    parts = status_pipeline.split_evenly(list(range(10)), 3)
    assert sorted(x for part in parts for x in part) == list(range(10))
    assert [len(p) for p in parts] == [4, 3, 3]
    assert status_pipeline.split_evenly([1], 4) == [[1]]
    assert status_pipeline.split_evenly([], 4) == []


def test_one_hour_of_checks_follows_each_schedule():
    ids = list(range(240))
    old = list(calllog_volume.hour_of_checks(ids, calllog_volume.OLD_PER_HOUR))
    new = list(calllog_volume.hour_of_checks(ids, calllog_volume.NEW_PER_HOUR))
    assert sum(1 for _p, kind in old if kind == "sender") == 240 * 6
    assert sum(1 for _p, kind in old if kind == "binding") == 240
    assert sum(1 for _p, kind in old if kind == "capability") == 10
    assert len(new) == 3 * 10 and {kind for _p, kind in new} == {"sender", "binding", "capability"}
    # at 10,000 portals: the issue's ~60,000 sender calls an hour before, 10,000 × 3 / 24 checks after
    assert calllog_volume.expected_calls(10_000, calllog_volume.OLD_PER_HOUR) == 60_000 + 40_000 + 417
    assert calllog_volume.expected_calls(10_000, calllog_volume.NEW_PER_HOUR) == 417 * (1 + 4 + 1)


@pytest.mark.django_db
@pytest.mark.parametrize("routine", [False, True])
def test_simulated_hour_writes_rows_per_variant_and_the_roll_up_counts_every_call(routine):
    portals = [PortalFactory() for _ in range(3)]
    per_hour = calllog_volume.OLD_PER_HOUR if not routine else {"sender": 1.0, "binding": 1.0, "capability": 1.0}
    volume = calllog_volume._simulate(portals, per_hour, routine=routine, failure_every=7)
    assert volume.calls == calllog_volume.expected_calls(3, per_hour)
    assert volume.failures == volume.calls // 7
    raw = RestCall.objects.count()
    if routine:  # successes counted, failures keep their row
        assert raw == volume.failures
        assert RestCall.objects.exclude(error_code="").count() == raw
        assert RestCallCount.objects.exists()
    else:
        assert raw == volume.calls
        assert not RestCallCount.objects.exists()
    assert calllog.pending_counts() == 0
    days = {timezone.localdate(at) for at in RestCall.objects.values_list("created_at", flat=True)}
    days |= set(RestCallCount.objects.values_list("day", flat=True))
    for day in days:  # whatever day the calls fell on (no dependence on the time the test runs)
        calllog.rollup_day(day)
    assert sum(RestCallDaily.objects.values_list("calls", flat=True)) == volume.calls


def test_benchmark_redis_clean_up_deletes_cache_prefixed_keys_and_keeps_others():
    from b24portal.redis import get_redis
    from benchmarks.common import cleanup_redis

    client = get_redis()
    left = [":1:b24:op:abc:messageservice.message.status.update", "b24:rl:portal-1", "bench-status-x",
            "_kombu.binding_permanent.bench-status-x"]
    for key in [*left, "keep:me"]:
        client.set(key, "1")
    try:
        assert cleanup_redis() >= len(left)
        assert not any(client.exists(key) for key in left)
        assert client.exists("keep:me")
    finally:
        client.delete("keep:me", *left)
