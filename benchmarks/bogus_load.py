"""Benchmark: bogus POSTs against one portal while its real SMS statuses are pushed (issue 10, finding 3).

    python -m benchmarks bogus_load [--rate 20] [--seconds 30] [--statuses 5]

`--rate` bogus POSTs per second for `--seconds` (made-up tokens and forged bodies to /b24/install/,
/b24/events/ and the frame pages, plus fresh valid tokens of a non-admin user) against one fake portal
(Bitrix24's standard plan: burst 50, 2 req/s), with one run of the status push task per second for the
`--statuses` statuses that became due that second. On simulated time (tests/bogus_load.py): the fake
cloud's clock is frozen and moved by the load, our limiter runs on it, and a sleep for a permit advances
it, so the figures do not depend on the machine's speed. Printed: real-call failures (push runs that
failed or statuses that never arrived), portal requests the bogus traffic caused (against the proof
budget B24_PROOF_BURST + B24_PROOF_RATE_PER_MINUTE × time), 503s; beside a baseline in the same run: the
same load with the proof budget and the failed-proof memory disabled through settings.
"""

from __future__ import annotations

import argparse
from typing import Any

from .common import scratch_database, setup_django


def _run(cloud: Any, carrier: Any, args: argparse.Namespace, overrides: dict[str, Any]) -> Any:
    from django.conf import settings
    from django.core.cache import cache
    from django.test import Client

    from tests.bogus_load import proof_budget, run_load, simulated_time

    from .status_pipeline import _make_portal

    saved = {name: getattr(settings, name) for name in overrides}
    for name, value in overrides.items():
        setattr(settings, name, value)
    cache.clear()
    try:
        fake, portal, account = _make_portal(cloud, carrier, 50, 2)
        with simulated_time(cloud.clock) as clock:
            result = run_load(Client(), fake, portal, account, clock, rate=args.rate, seconds=args.seconds,
                              statuses_per_second=args.statuses)
    finally:
        for name, value in saved.items():
            setattr(settings, name, value)
    return result, proof_budget(result.seconds)  # the budget b24portal allows (settings restored)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks bogus_load", description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=20, help="bogus POSTs per simulated second")
    parser.add_argument("--seconds", type=int, default=30, help="simulated seconds of load")
    parser.add_argument("--statuses", type=int, default=5, help="statuses due per second (one push run each)")
    args = parser.parse_args(argv)

    setup_django()
    from django.conf import settings

    from tests.fakes import b24_placements
    from tests.fakes.bitrix24 import FakeBitrix24Cloud
    from tests.fakes.carriers import FakeSmsRu
    from tests.fakes.clock import Clock

    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "testserver"]  # Django's test client (as pytest-django)
    unthrottled = {"B24_THROTTLE_FRAMES": "1000000/min", "B24_THROTTLE_EVENTS": "1000000/min"}
    baseline = {**unthrottled, "B24_PROOF_BURST": 10**9, "B24_PROOF_RATE_PER_MINUTE": 1e12, "B24_FAILED_PROOF_TTL": 0}
    with scratch_database("bench_bogus"), FakeBitrix24Cloud(
            client_id=settings.B24_CLIENT_ID, client_secret=settings.B24_CLIENT_SECRET, clock=Clock.manual()) as cloud, \
            FakeSmsRu() as carrier:
        b24_placements.install(cloud)
        settings.B24_OAUTH_URL, settings.B24_SERVER_ENDPOINT = cloud.oauth_url, cloud.server_endpoint
        ours, budget = _run(cloud, carrier, args, unthrottled)
        base, _ = _run(cloud, carrier, args, baseline)
        runs = [("b24portal (proof budget + failed-proof memory)", ours, f"{budget:.0f}"),
                ("baseline (both disabled via settings)", base, "off")]

    print(f"\nbogus load: {args.rate} bogus POSTs/s for {args.seconds} s (simulated) against one fake portal "
          f"(burst 50, 2 req/s) while {args.statuses} statuses/s are pushed (one push run per second)")
    print(f"proof budget: B24_PROOF_BURST {settings.B24_PROOF_BURST} + {settings.B24_PROOF_RATE_PER_MINUTE:g}/min; "
          f"failed proofs remembered {settings.B24_FAILED_PROOF_TTL} s; per-address throttle off for the run\n")
    print(f"{'variant':<50} {'POSTs':>6} {'sim s':>6} {'real-call failures':>19} {'statuses in':>12} "
          f"{'portal req by bogus':>20} {'budget':>7} {'503s':>5} {'5xx to bogus':>12}")
    for name, result, budget in runs:
        print(f"{name:<50} {result.posts:>6} {result.seconds:>6.1f} {result.real_call_failures:>19} "
              f"{f'{result.statuses_arrived}/{result.statuses}':>12} {result.portal_requests_by_bogus:>20} "
              f"{budget:>7} {result.rejected_503:>5} {result.server_errors:>12}")
    for name, result, _budget in runs:
        print(f"\n{name}: answers to the bogus POSTs {dict(sorted(result.answers.items()))}; push runs "
              f"{result.push_runs}, failed {result.push_failures}")
        for key, count in result.caused_by.most_common(8):
            print(f"  {count:>4}  {key}")
    print("\nsim s beyond the load's own seconds: web requests slept (simulated) for permits of the portal's shared "
          "limiter, which proofs still take when their own budget is off.")
    return 0
