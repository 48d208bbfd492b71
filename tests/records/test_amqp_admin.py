"""Admin of AMQP bindings and offline-event feeds: staff bind queues to portals, see counts and failures."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from records.channels import AmqpBinding, OfflineFeed
from tenants import schedule
from tenants.models import PortalCheck
from tests.factories import PortalFactory

pytestmark = pytest.mark.django_db


def test_staff_bind_a_queue_to_a_portal_in_admin(admin_client: Client) -> None:
    portal = PortalFactory()
    response = admin_client.post("/admin/records/amqpbinding/add/",
                                 {"portal": portal.pk, "queue": "crm.users", "enabled": "on"})
    assert response.status_code == 302, response.content.decode()[:2000]
    binding = AmqpBinding.objects.get()
    assert (binding.portal, binding.queue, binding.enabled) == (portal, "crm.users", True)


@pytest.mark.parametrize("queue", ["amq.reserved", "has space", "", "x" * 256])
def test_a_queue_name_rabbitmq_would_refuse_is_refused_with_the_reason(admin_client: Client, queue: str) -> None:
    portal = PortalFactory()
    response = admin_client.post("/admin/records/amqpbinding/add/", {"portal": portal.pk, "queue": queue})
    assert response.status_code == 200
    assert not AmqpBinding.objects.exists()


def test_the_bindings_list_shows_counts_and_the_last_rejection_in_a_fixed_number_of_queries(
        admin_client: Client, django_assert_max_num_queries: Any) -> None:
    for i in range(5):
        AmqpBinding.objects.create(portal=PortalFactory(), queue=f"q{i}", rejected_count=i,
                                   last_rejection="Missing phone number")
    with django_assert_max_num_queries(12):
        page = admin_client.get("/admin/records/amqpbinding/")
    assert page.status_code == 200
    assert page.content.decode().count("Missing phone number") >= 5


def test_disable_action_stops_reading_a_queue(admin_client: Client) -> None:
    binding = AmqpBinding.objects.create(portal=PortalFactory(), queue="crm.users")
    admin_client.post("/admin/records/amqpbinding/", {"action": "disable", "_selected_action": [binding.pk]})
    binding.refresh_from_db()
    assert not binding.enabled


def test_poll_now_makes_the_portals_offline_events_due(admin_client: Client) -> None:
    portal = PortalFactory(status="active")
    feed = OfflineFeed.objects.create(portal=portal, status=OfflineFeed.Status.BOUND, auth_connector="b24portal")
    schedule.ensure_scheduled([portal.pk], ["offline_events"], schedule.interval_of("offline_events"))
    PortalCheck.objects.filter(portal=portal).update(due_at="2100-01-01T00:00:00Z")
    admin_client.post("/admin/records/offlinefeed/", {"action": "poll_now", "_selected_action": [feed.pk]})
    assert PortalCheck.objects.get(portal=portal, kind="offline_events").due_at.year < 2100
