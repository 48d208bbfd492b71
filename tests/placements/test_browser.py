"""The framed pages in a real headless Chromium, loaded the way Bitrix24 loads them: a page on the fake
portal's own origin (http://127.0.0.1:<port>, which our CSP frame-ancestors names) holds an iframe and
submits a form with the POST fields into it. The BX24 SDK is a stub served from that origin; it reports
every call (installFinish, placement.call, resizeWindow) to the host page, which records them.

The host page and the stub are served over real HTTP by the fake portal's own server
(b24_placements.serve_page); everything our pages do goes over real HTTP to a live server. Only the
install page's hard-wired SDK URL (api.bitrix24.com) is answered by the browser's request routing. Screenshots go to test-artifacts/screenshots/ and, with UPDATE_SCREENSHOTS=1, for the README tour to docs/screenshots/.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from messageservice.models import Message
from tenants.models import InstallRun, Portal
from tests.browser import launch_chromium, playwright_or_skip, save_screenshot
from tests.fakes import b24_placements

from .conftest import APP_URL, CONSENT_URL, LIST_MENU_URL, frame_request

REAL_SDK = "https://api.bitrix24.com/api/v1/**"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

sync_api = playwright_or_skip()

BX24_STUB = """
(function () {
  function report(method, args) { window.parent.postMessage({bx24stub: true, method: method, args: args}, '*'); }
  window.BX24 = {
    init: function (cb) { report('init', []); setTimeout(cb, 0); },
    installFinish: function () { report('installFinish', []); },
    resizeWindow: function (w, h, cb) { report('resizeWindow', [w, h]); if (cb) cb(); },
    fitWindow: function (cb) { report('fitWindow', []); if (cb) cb(); },
    placement: {
      call: function (command, value, cb) { report('placement.call', [command, value]); if (cb) cb(); },
      info: function () { return {}; }
    }
  };
})();
"""


def host_page(action: str, form: dict[str, str]) -> str:
    inputs = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in form.items())
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Fake Bitrix24</title>
<style>body{{margin:0;font:13px Arial;background:#eef2f4}} header{{background:#2fc6f6;color:#fff;padding:8px 14px;font-weight:bold}}
iframe{{display:block;margin:10px;width:calc(100% - 20px);height:620px;border:0;background:#fff;box-shadow:0 1px 3px #0002}}</style></head>
<body><header>Bitrix24 (fake portal)</header>
<iframe name="app" id="app"></iframe>
<form id="launch" method="post" target="app" action="{html.escape(action)}">{inputs}</form>
<script>
window.__bx24 = [];
window.addEventListener('message', function (e) {{ if (e.data && e.data.bx24stub) window.__bx24.push({{method: e.data.method, args: e.data.args}}); }});
document.getElementById('launch').submit();
</script></body></html>"""


@pytest.fixture(scope="module")
def _sync_playwright_and_django() -> Iterator[None]:
    # Playwright's sync API keeps an event loop running in this thread; Django would then refuse ORM calls
    # made by the test itself (the live server runs in its own thread and is unaffected).
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture(scope="module")
def browser(_sync_playwright_and_django: None, django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        instance = launch_chromium(playwright)
        yield instance
        instance.close()


class Portal24:
    """Opens frames of one fake portal in the browser, as Bitrix24 would."""

    def __init__(self, browser: Any, fake_portal: Any, live_server: Any) -> None:
        self.fake_portal = fake_portal
        self.live_server = live_server
        self.origin = f"http://{fake_portal.domain}"
        self.context = browser.new_context(viewport={"width": 960, "height": 680})
        self.stub_url = b24_placements.serve_page(fake_portal, "/_bx24_stub.js", BX24_STUB,
                                                  "application/javascript; charset=utf-8")
        # The install page (tenants) still loads the real SDK URL: the same stub answers there.
        self.context.route(REAL_SDK, lambda route: route.fulfill(body=BX24_STUB, content_type="application/javascript"))
        self.page = self.context.new_page()
        self.responses: list[str] = []
        self.page.on("response", lambda r: self.responses.append(f"{r.status} {r.url[:120]}"))
        self.page.on("console", lambda m: self.responses.append(f"console: {m.text[:300]}"))
        self.page.on("requestfailed", lambda r: self.responses.append(f"failed {r.url[:100]} {r.failure}"))

    def open(self, path: str, query: dict[str, str], form: dict[str, str]) -> Any:
        action = f"{self.live_server.url}{path}?{urlencode(query)}"
        self.page.goto(b24_placements.serve_page(self.fake_portal, "/_host", host_page(action, form)))
        return self.page.frame_locator("#app")

    def calls(self, method: str | None = None) -> list[dict[str, Any]]:
        rows = self.page.evaluate("window.__bx24")
        return [row for row in rows if method in (None, row["method"])]

    def wait_for_call(self, method: str, predicate: str = "true") -> None:
        try:
            self._wait_for_call(method, predicate)
        except sync_api.TimeoutError:
            frame = self.page.frame("app")
            content = frame.content()[:3000] if frame else "(no frame)"
            raise AssertionError(f"BX24 {method} never called; calls: {self.calls()}; "
                                 f"responses: {self.responses}; frame: {content}") from None

    def _wait_for_call(self, method: str, predicate: str) -> None:
        self.page.wait_for_function(
            f"window.__bx24.some(function (c) {{ return c.method === {json.dumps(method)} && ({predicate}); }})",
            timeout=15000)

    def screenshot(self, name: str, *, docs: bool = True) -> None:
        save_screenshot(self.page, name, docs=docs)


@pytest.fixture
def b24(browser: Any, fake_portal: Any, live_server: Any, settings: Any) -> Iterator[Portal24]:
    portal24 = Portal24(browser, fake_portal, live_server)
    settings.B24_JS_SDK_URL = portal24.stub_url
    yield portal24
    portal24.context.close()


def test_the_install_page_calls_installfinish_after_the_steps_succeed(b24, fake_portal):
    query, form = fake_portal.install_frame(user_id=1, is_admin=True)
    frame = b24.open("/b24/install/", query, form)

    b24.wait_for_call("installFinish")
    portal = Portal.objects.get(member_id=fake_portal.member_id)
    assert portal.install_runs.get().status == InstallRun.Status.SUCCEEDED
    assert portal.status == Portal.Status.ACTIVE
    assert frame.locator("#done").is_visible()
    assert [c["method"] for c in b24.calls()].count("installFinish") == 1
    b24.screenshot("install")


def test_the_list_menu_slider_sends_an_sms_that_reaches_the_carrier(b24, fake_portal, installed_portal, contact,
                                                                     sms_account, fake_smsru):
    fake_portal.add_user(5, is_admin=False)
    query, form = frame_request(fake_portal, "CRM_CONTACT_LIST_MENU", {"ID": str(contact)}, user_id=5,
                                is_admin=False)
    frame = b24.open(LIST_MENU_URL, query, form)

    frame.locator("#item-title").wait_for()
    assert frame.locator("#item-title").inner_text() == "Ivan Petrov"
    frame.locator("#send-to").select_option("+79991234567")
    frame.locator("#send-body").fill("Your order #42 is ready")
    frame.locator("#send-button").click()
    frame.locator("#send-result.ok").wait_for()
    frame.locator("#history tbody tr[data-id]").first.wait_for()

    message = Message.objects.get(portal=installed_portal)
    assert message.body == "Your order #42 is ready" and message.author_user_id == 5
    assert [m.body for m in fake_smsru.messages] == ["Your order #42 is ready"]
    assert [c["AUTHOR_ID"] for c in b24_placements.timeline(fake_portal)] == [5]
    b24.wait_for_call("resizeWindow")
    b24.screenshot("crm-list-menu")


def consent_options(mode: str, item_id: int) -> dict[str, Any]:
    return {"MODE": mode, "ENTITY_ID": "CRM_CONTACT", "FIELD_NAME": "UF_CRM_SMS_CONSENT",
            "ENTITY_VALUE_ID": str(item_id), "VALUE": None, "MULTIPLE": "N", "MANDATORY": "N", "XML_ID": None}


def test_the_consent_field_in_view_and_edit_mode(b24, fake_portal, installed_portal, contact):
    from messageservice.consent import consent_for, do_set_consent

    do_set_consent(installed_portal, phone="+79997654321", opted_in=True, user_id=1, source="widget")
    query, form = frame_request(fake_portal, "USERFIELD_TYPE", consent_options("view", contact))
    frame = b24.open(CONSENT_URL, query, form)
    frame.locator("#consent-view").wait_for()
    assert "opted in" in frame.locator('tr[data-phone="+79997654321"]').inner_text()
    b24.screenshot("consent-view")

    query, form = frame_request(fake_portal, "USERFIELD_TYPE", consent_options("edit", contact))
    frame = b24.open(CONSENT_URL, query, form)
    frame.locator('.consent-row[data-phone="+79991234567"] input[value="N"]').check()
    b24.wait_for_call("placement.call", "c.args[0] === 'setValue'")

    (set_value,) = [c["args"] for c in b24.calls("placement.call")]
    assert set_value == ["setValue", "+79997654321:Y, +79991234567:N"]
    assert consent_for(installed_portal, ["+79991234567"])["+79991234567"].opted_in is False
    frame.locator("#consent-result.ok").wait_for()
    b24.screenshot("consent-edit")


def test_the_app_page_for_an_administrator(b24, fake_portal, installed_portal, sms_account):
    for status, count in (("delivered", 3), ("failed", 1), (None, 1)):
        for i in range(count):
            Message.objects.create(portal=installed_portal, account=sms_account, carrier="smsru",
                                   message_id=f"{status}{i}".ljust(32, "0"), origin="crm", recipient_raw="+7999",
                                   body="x", status=status)
    query, form = frame_request(fake_portal)
    frame = b24.open(APP_URL, query, form)

    frame.locator('#accounts tbody tr[data-id]').first.wait_for()
    assert "Main SMS" in frame.locator("#accounts").inner_text()
    frame.locator("#chart rect.bar-delivered").first.wait_for()
    assert frame.locator("#chart rect.bar").count() == 3
    assert "CRM_LEAD_LIST_MENU" in frame.locator("#bindings").inner_text()
    # The carrier's declared credential fields are labelled inputs; a stored secret is never shown back.
    frame.locator(f'#accounts tbody tr[data-id="{sms_account.pk}"] button.secondary').first.click()
    api_id = frame.locator("#cred-api_id")
    assert api_id.get_attribute("type") == "password" and api_id.input_value() == ""
    assert api_id.get_attribute("placeholder") == "stored; leave blank to keep"
    assert "API key (api_id)" in frame.locator("#account-credentials").inner_text()
    frame.locator("#account-carrier").select_option("twilio")
    assert frame.locator("#cred-account_sid").get_attribute("type") == "text"
    assert frame.locator("#cred-auth_token").get_attribute("type") == "password"
    frame.locator("#account-reset").click()
    # Add a provider through the page (frame token → our API → messageservice).
    frame.locator("#account-carrier").select_option("sandbox")
    frame.locator("#account-code").fill("demo")
    frame.locator("#account-name").fill("Demo sender")
    frame.locator("#account-save").click()
    frame.locator("#account-result.ok").wait_for()
    frame.locator('#accounts tbody tr:has-text("Demo sender")').wait_for()
    assert installed_portal.sms_accounts.filter(code="demo", carrier="sandbox").exists()
    b24.screenshot("app-admin")


def test_the_app_page_for_another_user(b24, fake_portal, installed_portal, sms_account):
    Message.objects.create(portal=installed_portal, account=sms_account, carrier="smsru", message_id="a" * 32,
                           origin="widget", recipient_raw="+79991234567", body="Reminder: meeting at 10",
                           author_user_id=5, status="delivered")
    fake_portal.add_user(5, is_admin=False)
    query, form = frame_request(fake_portal, user_id=5, is_admin=False, lang="ru")
    frame = b24.open(APP_URL, query, form)

    frame.locator("#my-messages").wait_for()
    assert "Reminder: meeting at 10" in frame.locator("#my-messages").inner_text()
    assert "доставлено" in frame.locator("#my-messages").inner_text()
    assert frame.locator("#accounts-card").count() == 0
    b24.screenshot("app-user")


def test_a_forged_frame_is_refused(b24, fake_portal, installed_portal):
    query, form = frame_request(fake_portal, AUTH_ID="f" * 64)
    with b24.page.expect_response(lambda r: r.url.startswith(b24.live_server.url + APP_URL)) as answer:
        b24.open(APP_URL, query, form)

    response = answer.value
    assert response.status == 403
    assert response.headers.get("x-frame-options") == "DENY"
    assert "content-security-policy" not in response.headers
    assert b24.calls() == []  # no page of ours ran in the frame
    b24.screenshot("forged-frame", docs=False)


def test_the_admin_dashboard_for_support_staff(browser, live_server):
    """Support's first page after logging in: what needs attention, the 14-day charts, the top portals."""
    from datetime import timedelta

    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from oauth.models import RestCallDaily
    from tests.console.conftest import make_account, make_messages
    from tests.factories import PortalFactory

    get_user_model().objects.create_superuser("support", "support@example.com", "pw-support-1")
    today = timezone.now().date()
    for i, carrier in enumerate(("smsru", "smsc", "twilio")):
        portal = PortalFactory(domain=f"shop{i + 1}.bitrix24.ru")
        account = make_account(portal, carrier=carrier)
        for day in range(14):
            make_messages(account, 3 + (day * (i + 2)) % 7, age=timedelta(days=day, hours=1))
            make_messages(account, 1 + day % 3, status="sent", age=timedelta(days=day, hours=1))
            make_messages(account, (day + 2 * i) % 2, status="undelivered", age=timedelta(days=day, hours=1))
            make_messages(account, (day + i) % 3, state=Message.State.FAILED, status=None,
                          last_error="[7] no route to the number", age=timedelta(days=day, hours=2))
            RestCallDaily.objects.create(portal=portal, day=today - timedelta(days=day), method="crm.item.list",
                                         calls=40 + 5 * day + 10 * i)
            RestCallDaily.objects.create(portal=portal, day=today - timedelta(days=day), method="crm.item.get",
                                         error_code="ACCESS_DENIED", calls=(day + i) % 4 * 3)
        make_messages(account, 1, state=Message.State.NEEDS_REVIEW, status=None, last_error="read timeout")
        RestCallDaily.objects.create(portal=portal, day=today, method="batch", error_code="QUERY_LIMIT_EXCEEDED",
                                     calls=12 * (i + 1))
    PortalFactory(status=Portal.Status.NEEDS_REINSTALL)

    context = browser.new_context(viewport={"width": 1280, "height": 1380})
    page = context.new_page()
    try:
        page.goto(f"{live_server.url}/admin/login/?next=/admin/")
        page.fill("#id_username", "support")
        page.fill("#id_password", "pw-support-1")
        page.click("input[type=submit]")
        page.locator("#console-dashboard").wait_for()
        assert page.locator('[data-queue="Messages that need review"] .n').inner_text() == "3"
        assert page.locator("#console-dashboard svg.b24-chart").count() == 2
        assert "shop1.bitrix24.ru" in page.locator("#top-volume").inner_text()
        save_screenshot(page, "dashboard")  # the dashboard; the model list continues below
    finally:
        context.close()
