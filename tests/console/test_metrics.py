"""GET /metrics: refused without the token or an allowed address; with it, the named series in Prometheus
format."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from messageservice.models import Message
from tenants.models import InstallRun, Portal
from tests.factories import PortalFactory

from .conftest import make_account, make_messages

pytestmark = pytest.mark.django_db

TOKEN = "metrics-secret-token"


@pytest.fixture(autouse=True)
def _metrics_settings(settings: Any) -> None:
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = ["10.1.0.0/16"]


def samples(body: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_an_anonymous_caller_is_refused(client: Any) -> None:
    response = client.get("/metrics")
    assert response.status_code == 401
    assert "b24portal_" not in response.content.decode()


def test_a_wrong_token_is_refused(client: Any) -> None:
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_no_token_and_no_allow_list_refuses_everyone(client: Any, settings: Any) -> None:
    settings.METRICS_TOKEN = ""
    settings.METRICS_ALLOWED_IPS = []
    assert client.get("/metrics", headers={"Authorization": "Bearer "}).status_code == 401


def test_an_allowed_address_needs_no_token(client: Any) -> None:
    assert client.get("/metrics", REMOTE_ADDR="10.1.2.3").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.2.0.1").status_code == 401


def test_the_token_is_accepted_and_the_named_series_are_present(client: Any) -> None:
    portal = PortalFactory()
    PortalFactory(status=Portal.Status.BLOCKED)
    account = make_account(portal, carrier="smsru")
    make_messages(account, 3)
    make_messages(account, 2, state=Message.State.FAILED, status=None)
    InstallRun.objects.create(portal=portal, trigger=InstallRun.Trigger.FRAME, status=InstallRun.Status.FAILED)

    response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    found = samples(response.content.decode())
    assert found[("b24portal_messages_24h", (("state", "sent_to_carrier"), ("status", "delivered")))] == 3
    assert found[("b24portal_messages_24h", (("state", "failed"), ("status", "none")))] == 2
    assert found[("b24portal_sends_24h", (("carrier", "smsru"),))] == 5
    assert found[("b24portal_send_failures_24h", (("carrier", "smsru"),))] == 2
    assert found[("b24portal_push_backlog", ())] == 0
    assert found[("b24portal_dispatch_backlog", ())] == 0
    assert found[("b24portal_portals", (("status", "blocked"),))] == 1
    assert found[("b24portal_portals", (("status", "active"),))] == 1
    assert found[("b24portal_install_runs", (("result", "failed"),))] == 1
    assert ("b24portal_rest_calls_today", (("outcome", "error"),)) in found
    assert ("b24portal_rest_503_today", ()) in found
    assert ("b24portal_token_refreshes_total", ()) in found
    assert ("b24portal_tokens_by_refresh_outcome", (("outcome", "refused"),)) in found
    assert found[("b24portal_broker_up", ())] == 1
    for queue in ("sms", "sms_status", "lifecycle", "maintenance"):
        assert found[("b24portal_celery_queue_length", (("queue", queue),))] >= 0


def test_the_dispatch_backlog_counts_the_rows_owed_a_dispatch(client: Any) -> None:
    account = make_account(PortalFactory(), carrier="smsru")
    owed = make_messages(account, 3, state=Message.State.ACCEPTED, status=None)
    make_messages(account, 2, state=Message.State.ACCEPTED, status=None)
    Message.objects.filter(pk__in=[m.pk for m in owed]).update(dispatch_pending=True)

    found = samples(client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).content.decode())

    assert found[("b24portal_dispatch_backlog", ())] == 3
