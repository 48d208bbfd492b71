"""Issue 10, finding 3's acceptance: 20 bogus POSTs/s for 30 s against one portal while its real SMS
statuses are pushed — 0 real calls fail, 0 × 503 QUERY_LIMIT_EXCEEDED, and the portal answers no more
requests for the bogus traffic than the proof budget allows. On simulated time (tests/bogus_load.py), so
the result does not depend on how fast this machine runs the 600 requests."""

from __future__ import annotations

import pytest

from tests.bogus_load import proof_budget, run_load, simulated_time

pytestmark = pytest.mark.django_db


def test_bogus_posts_do_not_starve_real_status_pushes(client, settings, b24_cloud, fake_portal, installed_portal,
                                                      sms_account):
    # The proof budget, not the per-address throttle, is what is measured here.
    settings.B24_THROTTLE_FRAMES = settings.B24_THROTTLE_EVENTS = "1000000/min"
    fake_portal.set_bucket(50, 2)  # Bitrix24's standard plan: burst 50, 2 req/s
    with simulated_time(b24_cloud.clock) as clock:
        result = run_load(client, fake_portal, installed_portal, sms_account, clock, rate=20, seconds=30)

    assert result.posts == 600 and result.seconds == pytest.approx(30.0)
    assert result.server_errors == 0, result.answers
    assert result.push_runs == 30 and result.push_failures == 0
    assert result.statuses_arrived == result.statuses == 150
    assert result.rejected_503 == 0 and fake_portal.count(status=503) == 0
    assert 0 < result.portal_requests_by_bogus <= proof_budget(result.seconds), result.caused_by
    assert result.answers[429] > 0  # the member's tokens beyond the budget were refused without a call
