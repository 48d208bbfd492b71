"""Dispatchers cost what is due (issue 11): due portals/accounts are selected through an index with a
limit and enqueued many per task; each portal/account is claimed in the chunk task, so overlapping ticks
or chunks never do the same work twice."""

from __future__ import annotations

import secrets
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.utils import timezone

from messageservice import delivery
from messageservice.models import Message, ProviderAccount
from tenants.models import Portal

pytestmark = pytest.mark.django_db


def portal_with_message(i: int, *, push_due: bool = False, poll_due: bool = False,
                        status: str = Portal.Status.ACTIVE) -> Message:
    portal = Portal.objects.create(member_id=f"member{i:08d}", domain=f"p{i}.bitrix24.ru", status=status)
    account = ProviderAccount.objects.create(portal=portal, carrier="smsru", code="sms", name="SMS")
    now = timezone.now()
    return Message.objects.create(
        portal=portal, account=account, carrier="smsru", message_id=secrets.token_hex(16), origin="crm",
        recipient_raw="+79991234567", body="hi", state=Message.State.HANDED_TO_CARRIER, status="delivered",
        status_changed_at=now, push_due=push_due, next_poll_at=now - timedelta(seconds=1) if poll_due else None)


@pytest.fixture
def recorded(monkeypatch):
    calls: dict[str, list[list[int]]] = {"push": [], "poll": []}
    monkeypatch.setattr(delivery.push_statuses, "delay", lambda ids: calls["push"].append(list(ids)))
    monkeypatch.setattr(delivery.poll_accounts, "delay", lambda ids: calls["poll"].append(list(ids)))
    monkeypatch.setattr(delivery, "DISPATCH_CHUNK", 3)
    return calls


def test_only_due_portals_are_selected_each_once_and_within_the_limit():
    due = [portal_with_message(i, push_due=True).portal_id for i in range(5)]
    for i in range(5, 9):
        portal_with_message(i)  # nothing to push
    extra = portal_with_message(9, push_due=True)
    Message.objects.create(portal_id=extra.portal_id, account_id=extra.account_id, carrier="smsru",
                           message_id=secrets.token_hex(16), origin="crm", recipient_raw="+7", body="x",
                           push_due=True)  # a second due row of one portal: the portal is selected once
    due.append(extra.portal_id)

    assert delivery.due_push_portals(100) == sorted(due)
    assert delivery.due_push_portals(2) == sorted(due)[:2]


def test_a_push_tick_enqueues_chunks_of_many_portals_covering_each_due_portal_once(recorded):
    due = sorted(portal_with_message(i, push_due=True).portal_id for i in range(7))
    portal_with_message(7)

    assert delivery.dispatch_status_pushes.apply().get() == 7
    assert [len(chunk) for chunk in recorded["push"]] == [3, 3, 1]
    assert sorted(pid for chunk in recorded["push"] for pid in chunk) == due


def test_a_poll_tick_enqueues_chunks_of_many_accounts(recorded):
    due = sorted(portal_with_message(i, poll_due=True).account_id for i in range(4))
    portal_with_message(4)  # not due

    assert delivery.dispatch_status_polls.apply().get() == 4
    assert [len(chunk) for chunk in recorded["poll"]] == [3, 1]
    assert sorted(aid for chunk in recorded["poll"] for aid in chunk) == due


def test_nothing_due_enqueues_nothing(recorded):
    portal_with_message(0)
    assert delivery.dispatch_status_pushes.apply().get() == 0
    assert delivery.dispatch_status_polls.apply().get() == 0
    assert recorded == {"push": [], "poll": []}


def test_a_claimed_portal_or_account_is_skipped_by_a_chunk(monkeypatch):
    message = portal_with_message(0, push_due=True, poll_due=True)
    worked: list[int] = []
    monkeypatch.setattr(delivery, "_push_portal", lambda portal: worked.append(portal.pk) or (0, False))
    monkeypatch.setattr(delivery, "_poll_account", lambda account: worked.append(account.pk) or "polled")
    push_lock, poll_lock = f"sms:push:{message.portal_id}", f"sms:poll:{message.account_id}"
    assert cache.add(push_lock, 1, 60) and cache.add(poll_lock, 1, 60)  # another worker holds both
    try:
        assert delivery.push_statuses.apply(args=[[message.portal_id]]).get() == {"busy": 1}
        assert delivery.poll_accounts.apply(args=[[message.account_id]]).get() == {"busy": 1}
        assert worked == []
    finally:
        cache.delete_many([push_lock, poll_lock])

    # Released: the same chunk does the work, once, and releases the claim after it.
    assert delivery.push_statuses.apply(args=[[message.portal_id, 999_999_999]]).get() == {"pushed": 1, "gone": 1}
    assert delivery.poll_accounts.apply(args=[[message.account_id]]).get() == {"polled": 1}
    assert worked == [message.portal_id, message.account_id]
    assert cache.add(push_lock, 1, 1) and cache.add(poll_lock, 1, 1)
    cache.delete_many([push_lock, poll_lock])


def test_an_inactive_portal_in_a_chunk_is_left_for_later():
    message = portal_with_message(0, push_due=True, status=Portal.Status.BLOCKED)
    assert delivery.push_statuses.apply(args=[[message.portal_id]]).get() == {"portal": 1}
    assert Message.objects.get(pk=message.pk).push_due
