"""Tokens that stay alive: a daily, spread-out check refreshes a portal's service token only when it would
otherwise go unrefreshed longer than B24_TOKEN_KEEPALIVE_DAYS; a portal whose token was used recently is not
touched, and the refresh is the locked one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from oauth import keepalive
from oauth.models import PortalToken
from oauth.tasks import keep_tokens_alive, keep_tokens_alive_chunk
from tenants import schedule
from tenants.models import JournalEntry, Portal, PortalCheck
from tests.factories import PortalFactory, PortalTokenFactory
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal

pytestmark = pytest.mark.django_db

DAY = timedelta(days=1)


def last_refreshed(portal: Portal, days_ago: float) -> PortalToken:
    token = PortalToken.objects.get(portal=portal, is_service=True)
    PortalToken.objects.filter(pk=token.pk).update(refreshed_at=timezone.now() - timedelta(days=days_ago))
    token.refresh_from_db()
    return token


def test_a_token_idle_longer_than_the_limit_is_refreshed_through_the_oauth_server(
        portal: Portal, b24_cloud: FakeBitrix24Cloud, settings) -> None:
    settings.B24_TOKEN_KEEPALIVE_DAYS = 20
    before = last_refreshed(portal, days_ago=25)
    refreshes = b24_cloud.oauth_count("refresh_token", status=200)

    outcome = keep_tokens_alive_chunk.delay([portal.pk]).get()

    after = PortalToken.objects.get(pk=before.pk)
    assert outcome == {"refreshed": 1}
    assert b24_cloud.oauth_count("refresh_token", status=200) == refreshes + 1
    assert after.refresh_token != before.refresh_token and after.refresh_count == before.refresh_count + 1
    assert timezone.now() - after.refreshed_at < timedelta(minutes=1)


def test_a_token_used_recently_is_not_refreshed(portal: Portal, b24_cloud: FakeBitrix24Cloud) -> None:
    before = last_refreshed(portal, days_ago=2)
    calls = b24_cloud.oauth_count()

    assert keep_tokens_alive_chunk.delay([portal.pk]).get() == {"used recently": 1}
    assert b24_cloud.oauth_count() == calls
    assert PortalToken.objects.get(pk=before.pk).refresh_token == before.refresh_token


def test_a_token_that_would_pass_the_limit_before_the_next_daily_check_is_refreshed_now(portal: Portal,
                                                                                        settings) -> None:
    settings.B24_TOKEN_KEEPALIVE_DAYS = 20
    token = last_refreshed(portal, days_ago=19.5)
    now = timezone.now()

    assert keepalive.needs_keepalive(token, now) is True
    assert keepalive.needs_keepalive(token, now - DAY) is False  # yesterday's check could still wait


def test_the_limit_is_the_setting(portal: Portal, settings) -> None:
    token = last_refreshed(portal, days_ago=10)
    settings.B24_TOKEN_KEEPALIVE_DAYS = 20
    assert keepalive.needs_keepalive(token, timezone.now()) is False
    settings.B24_TOKEN_KEEPALIVE_DAYS = 5
    assert keepalive.needs_keepalive(token, timezone.now()) is True


def test_storing_a_new_pair_counts_as_use(portal: Portal) -> None:
    token = PortalToken.objects.get(portal=portal, is_service=True)

    assert keepalive.needs_keepalive(token, timezone.now() + timedelta(days=15)) is False
    assert keepalive.needs_keepalive(token, timezone.now() + timedelta(days=19)) is True


def test_the_tick_visits_only_portals_whose_daily_check_is_due(portal: Portal, b24_cloud: FakeBitrix24Cloud) -> None:
    last_refreshed(portal, days_ago=25)
    not_due = PortalFactory()
    idle = PortalTokenFactory(portal=not_due, refreshed_at=timezone.now() - timedelta(days=25))
    now = timezone.now()
    PortalCheck.objects.create(portal=portal, kind=keepalive.TOKEN_KEEPALIVE, due_at=now - timedelta(minutes=1))
    PortalCheck.objects.create(portal=not_due, kind=keepalive.TOKEN_KEEPALIVE, due_at=now + timedelta(hours=5))

    assert keep_tokens_alive.delay().get() == 1

    assert PortalToken.objects.get(pk=idle.pk).refresh_count == 0  # its turn comes later in the day
    assert PortalToken.objects.get(portal=portal, is_service=True).refresh_count == 1
    row = PortalCheck.objects.get(portal=portal, kind=keepalive.TOKEN_KEEPALIVE)
    assert row.due_at > now + timedelta(hours=23)  # next visit: one day on, never hourly


def test_portals_without_a_keepalive_row_get_one_spread_over_the_day() -> None:
    portals = PortalFactory.create_batch(48)
    now = timezone.now()

    keepalive.schedule_unscheduled(limit=1000)

    due = sorted(PortalCheck.objects.filter(kind=keepalive.TOKEN_KEEPALIVE).values_list("due_at", flat=True))
    assert len(due) == len(portals)
    assert all(now - timedelta(seconds=5) <= at < now + DAY + timedelta(seconds=5) for at in due)
    assert due[-1] - due[0] > timedelta(hours=12)  # spread, not bunched


def test_a_refused_keepalive_refresh_moves_the_portal_to_needs_reinstall(portal: Portal,
                                                                         fake_portal: FakePortal) -> None:
    last_refreshed(portal, days_ago=25)
    fake_portal.revoke_tokens()

    outcome = keep_tokens_alive_chunk.delay([portal.pk]).get()

    assert outcome == {"invalid_grant": 1}
    portal.refresh_from_db()
    assert portal.status == Portal.Status.NEEDS_REINSTALL
    assert JournalEntry.objects.filter(portal=portal, kind=JournalEntry.Kind.TOKEN,
                                       message__startswith="keep-alive refresh failed").exists()


def test_the_keepalive_check_is_registered_daily() -> None:
    assert keepalive.TOKEN_KEEPALIVE in schedule.registered_kinds()
    assert schedule.interval_of(keepalive.TOKEN_KEEPALIVE) == DAY
