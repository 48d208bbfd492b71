"""The REST client serves webhook-connected portals transparently: same call/batch API, limiter, call log and
capability check, through /rest/<user>/<secret>/<method>.json without a token; a 401 is never an expiry."""

from __future__ import annotations

import io
import json
import logging
import logging.config

import pytest
from django.conf import settings

from oauth import capabilities
from oauth.capabilities import check_portal
from oauth.client import PortalClient
from oauth.errors import B24AccessDenied, B24RateLimited
from oauth.models import PortalToken, RestCall, WebhookCredential
from tenants.models import JournalEntry, Portal
from tests.webhook_portals import connect_webhook_portal

pytestmark = pytest.mark.django_db


@pytest.fixture
def leads(fake_portal):
    """A minimal crm.lead.add / crm.lead.get on the fake portal (scope crm)."""
    store: dict[int, dict] = {}

    def add(portal, params, ctx):
        store[len(store) + 1] = dict(params.get("fields") or {})
        return len(store)

    def get(portal, params, ctx):
        return {"ID": str(params["ID"]), **store[int(params["ID"])]}

    fake_portal.register_method("crm.lead.add", add, scope="crm")
    fake_portal.register_method("crm.lead.get", get, scope="crm")
    return store


@pytest.fixture
def webhook_portal(fake_portal):
    return connect_webhook_portal(fake_portal, user_id=3, scopes=("crm", "user"), is_admin=False)


def secret_of(url: str) -> str:
    return url.rstrip("/").rsplit("/", 1)[-1]


def test_calls_go_through_the_webhook_url_as_its_user_without_a_token(fake_portal, leads, webhook_portal):
    portal, _url = webhook_portal
    lead_id = PortalClient(portal).call("crm.lead.add", {"fields": {"TITLE": "Ivan"}})
    assert lead_id == 1 and leads[1] == {"TITLE": "Ivan"}
    (call,) = fake_portal.calls("crm.lead.add")
    assert call.user_id == 3 and call.token is None and "auth" not in call.params
    assert not PortalToken.objects.filter(portal=portal).exists()
    assert RestCall.objects.filter(portal=portal, method="crm.lead.add", error_code="").count() == 1


def test_batch_works_through_the_webhook_in_one_request(fake_portal, leads, webhook_portal):
    portal, _url = webhook_portal
    result = PortalClient(portal).batch({
        "add": ("crm.lead.add", {"fields": {"TITLE": "Olga"}}),
        "get": "crm.lead.get?ID=$result[add]",
        "app": ("app.info", {}),
    })
    assert result.results["add"] == 1 and result.results["get"]["TITLE"] == "Olga"
    assert result.errors["app"].code == "WRONG_AUTH_TYPE"  # app-only, refused by Bitrix24 for a webhook
    assert fake_portal.count("batch") == 2  # the proof's batch when it was added, and this one
    assert RestCall.objects.filter(portal=portal, method="batch", batch_size=3).count() == 1


def test_webhook_calls_take_permits_from_the_portals_shared_limiter(fake_portal, webhook_portal, limiter_clock):
    portal, _url = webhook_portal
    settings.B24_RATE_HEADROOM = 0.04  # burst 50 x 0.04 = 2 permits, refilled at 0.08/s
    try:
        client = PortalClient(portal, max_wait=0)
        before = fake_portal.count("profile")
        client.call("profile")
        client.call("profile")
        with pytest.raises(B24RateLimited):
            client.call("profile")
        assert fake_portal.count("profile") == before + 2  # the third never left
    finally:
        del settings.B24_RATE_HEADROOM


def test_a_method_outside_the_webhooks_scopes_is_refused_with_bitrix24s_reason(fake_portal, leads):
    portal, _url = connect_webhook_portal(fake_portal, scopes=("user",))
    with pytest.raises(B24AccessDenied) as refused:
        PortalClient(portal).call("crm.lead.get", {"ID": 1})
    assert refused.value.code == "insufficient_scope"
    portal.refresh_from_db()
    assert portal.status == Portal.Status.ACTIVE  # a scope problem is not a revoked webhook


def test_a_401_marks_the_portal_and_journals_it_without_any_refresh(b24_cloud, fake_portal, webhook_portal):
    portal, url = webhook_portal
    fake_portal.delete_webhook(url)
    oauth_calls = b24_cloud.oauth_count()
    with pytest.raises(B24AccessDenied) as refused:
        PortalClient(portal).call("profile")
    assert refused.value.http_status == 401 and refused.value.code == "INVALID_CREDENTIALS"
    assert fake_portal.count("profile", status=401) == 1  # asked once, never repeated
    assert b24_cloud.oauth_count() == oauth_calls
    portal.refresh_from_db()
    hook = WebhookCredential.objects.get(portal=portal)
    assert portal.status == Portal.Status.NEEDS_REINSTALL
    assert hook.refused_at is not None and hook.refused_error.startswith("INVALID_CREDENTIALS")
    messages = list(JournalEntry.objects.filter(portal=portal).values_list("message", flat=True))
    assert any("incoming webhook refused (INVALID_CREDENTIALS)" in m for m in messages)
    assert any(m.startswith("profile: INVALID_CREDENTIALS") for m in messages)


@pytest.fixture
def crm_requirement_for_webhooks():
    before_m, before_s, before_w = (dict(capabilities._methods), dict(capabilities._scopes),
                                    set(capabilities._webhook_scopes))
    capabilities.require_methods("crm.lead.add", "crm.lead.get", scope="crm", app="tests", for_webhooks=True)
    yield
    capabilities._methods.clear()
    capabilities._methods.update(before_m)
    capabilities._scopes.clear()
    capabilities._scopes.update(before_s)
    capabilities._webhook_scopes.clear()
    capabilities._webhook_scopes.update(before_w)


def test_the_capability_check_of_a_webhook_portal_covers_what_works_through_a_webhook(
        fake_portal, leads, webhook_portal, crm_requirement_for_webhooks):
    portal, _url = webhook_portal
    caps = check_portal(portal, PortalClient(portal))
    assert caps.ok and caps.missing == []
    assert caps.scopes == ["crm", "user"]
    assert caps.has_method("crm.lead.add") and caps.has_method("crm.lead.get")
    assert "placement.bind" not in caps.methods and "messageservice.sender.add" not in caps.methods


def test_the_capability_check_names_a_scope_the_webhook_lacks(fake_portal, leads, crm_requirement_for_webhooks):
    portal, _url = connect_webhook_portal(fake_portal, scopes=("user",))
    caps = check_portal(portal, PortalClient(portal))
    assert not caps.ok
    assert "scope crm" in caps.missing
    assert any(m.startswith("method crm.lead.add (not available") for m in caps.missing)


@pytest.fixture
def debug_log_stream():
    stream = io.StringIO()
    config = json.loads(json.dumps(settings.LOGGING))
    config["handlers"]["console"]["stream"] = stream
    config["root"]["level"] = "DEBUG"
    logging.config.dictConfig(config)
    logging.getLogger("urllib3").setLevel(logging.DEBUG)
    yield stream
    logging.config.dictConfig(settings.LOGGING)


def test_the_webhook_secret_never_reaches_a_log_line(fake_portal, debug_log_stream):
    portal, url = connect_webhook_portal(fake_portal)
    PortalClient(portal).call("profile")
    logging.getLogger("tests").warning("pasted %s", url)
    output = debug_log_stream.getvalue()
    assert "/rest/1/<redacted>/profile.json" in output  # urllib3's request line, masked
    assert secret_of(url) not in output


def test_a_renamed_portal_is_followed_through_its_webhook_and_keeps_its_member_id(fake_portal, webhook_portal):
    portal, _url = webhook_portal
    member_id, old_domain = portal.member_id, portal.domain
    fake_portal.move_domain()
    assert PortalClient(portal).call("profile")["ID"] == "3"
    portal.refresh_from_db()
    assert portal.domain == fake_portal.domain != old_domain and portal.member_id == member_id
    assert portal.rest_endpoint == fake_portal.client_endpoint
    assert fake_portal.count(status=302) == 1  # the old address answered once; the new one served the call
