"""The fake Bitrix24's incoming webhooks (/rest/<user>/<secret>/<method>[.json]): the documented semantics
of local-integrations/local-webhooks.md and the wire contracts (§3 errors, §5/§6 app-only methods)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from tests.fakes import b24_placements
from tests.fakes.b24_messageservice import install_messageservice
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal
from tests.fakes.clock import Clock


@pytest.fixture
def cloud() -> Iterator[FakeBitrix24Cloud]:
    with FakeBitrix24Cloud(clock=Clock.manual()) as fake_cloud:
        b24_placements.install(fake_cloud)
        yield fake_cloud


@pytest.fixture
def portal(cloud: FakeBitrix24Cloud) -> FakePortal:
    return install_messageservice(cloud.create_portal())


def test_a_webhook_calls_methods_as_its_user_without_an_auth_token(portal):
    portal.add_user(7, name="Olga", is_admin=False)
    url = portal.add_webhook(7, ["crm"])
    answer = requests.post(url + "profile.json", json={}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["result"]["ID"] == "7" and answer.json()["result"]["ADMIN"] is False
    assert requests.get(url + "scope", timeout=5).json()["result"] == ["crm"]  # no .json suffix works too
    (call,) = portal.calls("profile")
    assert call.user_id == 7 and call.token is None


@pytest.mark.parametrize("tamper", ["secret", "user"])
def test_a_wrong_secret_or_user_id_is_401_invalid_credentials(portal, tamper):
    url = portal.add_webhook(1, ["crm"])
    base, user, secret = url.rstrip("/").rsplit("/", 2)
    bad = f"{base}/{user}/{secret}x/" if tamper == "secret" else f"{base}/{int(user) + 1}/{secret}/"
    answer = requests.post(bad + "profile.json", json={}, timeout=5)
    assert answer.status_code == 401
    assert answer.json() == {"error": "INVALID_CREDENTIALS", "error_description": "Invalid request credentials"}


def test_a_deleted_webhook_stops_working(portal):
    url = portal.add_webhook(1, ["crm"])
    portal.delete_webhook(url)
    assert requests.post(url + "profile.json", json={}, timeout=5).status_code == 401


def test_a_method_outside_the_webhook_scopes_is_insufficient_scope(portal):
    url = portal.add_webhook(1, ["user"])  # the portal grants crm to the app, the webhook does not have it
    answer = requests.post(url + "crm.lead.get.json", json={"ID": 1}, timeout=5)
    assert answer.status_code == 403 and answer.json()["error"] == "insufficient_scope"


@pytest.mark.parametrize(("method", "code"), [
    ("placement.bind", "WRONG_AUTH_TYPE"),
    ("event.bind", "WRONG_AUTH_TYPE"),
    ("app.info", "WRONG_AUTH_TYPE"),
    ("messageservice.sender.add", "ACCESS_DENIED"),
])
def test_methods_that_need_an_application_context_are_refused_through_a_webhook(portal, method, code):
    url = portal.add_webhook(1, ["crm", "placement", "messageservice", "user"])
    answer = requests.post(url + f"{method}.json", json={"PLACEMENT": "CRM_LEAD_LIST_MENU", "HANDLER": "https://x/"},
                           timeout=5)
    assert answer.status_code == 403 and answer.json()["error"] == code


def test_batch_through_a_webhook_runs_each_command_within_the_webhook_scopes(portal):
    url = portal.add_webhook(1, ["user"])
    answer = requests.post(url + "batch.json", json={"cmd": {"me": "profile", "lead": "crm.lead.get?ID=1"}},
                           timeout=5).json()["result"]
    assert answer["result"]["me"]["ID"] == "1"
    assert answer["result_error"]["lead"]["error"] == "insufficient_scope"
    assert portal.count("batch") == 1 and portal.count("profile", in_batch=True) == 1


def test_webhook_requests_fill_the_portals_leaky_bucket(cloud, portal):
    portal.set_bucket(burst=2, rate=1)
    url = portal.add_webhook(1, ["crm"])
    statuses = [requests.post(url + "profile.json", json={}, timeout=5).status_code for _ in range(3)]
    assert statuses == [200, 200, 503]
    cloud.advance(1.0)
    assert requests.post(url + "profile.json", json={}, timeout=5).status_code == 200


def test_method_get_through_a_webhook_answers_for_the_webhook(portal):
    url = portal.add_webhook(1, ["user", "placement"])

    def available(name: str) -> bool:
        return requests.post(url + "method.get.json", json={"name": name}, timeout=5).json()["result"]["isAvailable"]

    assert available("profile") and not available("crm.lead.get")  # crm: not among the webhook's scopes
    assert not available("placement.bind")  # needs an application context
