"""The sandbox tour in a real headless Chromium against a live server, with a real Celery worker consuming
the sms, lifecycle and maintenance queues (Redis broker) and the sandbox reached over real HTTP by that
worker: open the sandbox, install, open a contact, send an SMS from the slider, send one from the card and
see "delivered" in the sandbox timeline, opt the number out in the consent field, see the next send refused,
open the app page, publish an app update (ONAPPUPDATE: we register everything again), uninstall
(ONAPPUNINSTALL).

Beat is played by the test: it calls the status-poll and status-push dispatchers (what beat runs every few
seconds). Screenshots go to test-artifacts/screenshots/ and, with UPDATE_SCREENSHOTS=1, to docs/screenshots/
for the README's "Try it in the sandbox".
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker

from b24portal.celery import app
from messageservice import delivery
from messageservice.models import Message
from sandbox import engine
from tenants.models import Portal
from tests.browser import launch_chromium, playwright_or_skip, save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.django_db(transaction=True)]

sync_api = playwright_or_skip()


@pytest.fixture
def sandbox(live_server: Any, settings: Any) -> Iterator[engine.Sandbox]:
    """The sandbox on the live server's address, configured as `make run` configures it."""
    url = live_server.url.replace("localhost", "127.0.0.1")  # Bitrix24 refuses handler URLs on "localhost"
    settings.SANDBOX_ENABLED = True
    settings.PUBLIC_URL = url
    settings.SANDBOX_DOMAIN = url.split("://", 1)[1]
    settings.B24_OAUTH_URL = f"{url}/sandbox/oauth/token/"
    settings.B24_SERVER_ENDPOINT = f"{url}/sandbox/rest/"
    settings.B24_JS_SDK_URL = f"{url}/sandbox/bx24.js"
    # Poll the carrier at once and often, so queued → sent → delivered takes seconds.
    settings.SMS_FIRST_POLL_SECONDS = 0
    settings.SMS_POLL_BASE_SECONDS = 1
    settings.SMS_POLL_MAX_SECONDS = 1
    current = engine.reset()
    yield current
    engine.reset().close()
    engine._current = None


@pytest.fixture
def worker(settings: Any) -> Iterator[None]:
    settings.CELERY_TASK_ALWAYS_EAGER = False
    app.conf.task_always_eager = False
    app.conf.broker_url = settings.CELERY_BROKER_URL
    try:
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING",
                          shutdown_timeout=10, queues=["sms", "sms_status", "lifecycle", "maintenance"]):
            yield
    finally:
        app.conf.task_always_eager = True


@pytest.fixture
def page(worker: None, sandbox: engine.Sandbox) -> Iterator[Any]:
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"  # Playwright's loop runs in this thread; the ORM is ours
    try:
        with sync_api.sync_playwright() as playwright:
            browser = launch_chromium(playwright)
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            yield context.new_page()
            browser.close()
    finally:
        os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)


def play_beat(until: Callable[[], bool], timeout: float = 60.0) -> bool:
    """Run the status dispatchers as beat would, until `until()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until():
            return True
        delivery.dispatch_status_polls()
        delivery.dispatch_status_pushes()
        time.sleep(0.5)
    return until()


def card_statuses(sandbox: engine.Sandbox, contact: int) -> list[str]:
    return [row["status"] for row in sandbox.timeline("contact", contact) if row["kind"] == "sms"]


def test_the_sandbox_tour_install_send_deliver_opt_out_update_uninstall(page, sandbox, live_server):
    base = sandbox.public_url
    page.goto(f"{base}/sandbox/")
    page.locator("#install").click()
    page.locator("#installed-note").wait_for(timeout=60_000)
    portal = Portal.objects.get(member_id=sandbox.member_id)
    assert portal.status == Portal.Status.ACTIVE
    assert sandbox.installed

    # The zero-configuration part: the sandbox carrier account's sender and the consent field reach the portal.
    assert play_beat(lambda: bool(sandbox.senders()) and sandbox.consent_field("contact") is not None)
    page.locator("#senders div").first.wait_for(timeout=10_000)
    assert "CRM_CONTACT.UF_CRM_SMS_CONSENT" in page.locator("#registered").inner_text()
    save_screenshot(page, "sandbox-install")
    contact = next(int(r["ID"]) for r in sandbox.items("contact") if r["NAME"] == "Ivan")

    page.goto(f"{base}/sandbox/crm/contact/")
    page.locator(f'.menu-button[data-id="{contact}"]').click()
    page.locator(".row-menu .app-item").first.click()
    slider = page.frame_locator("#slider-frame")
    slider.locator("#item-title").wait_for(timeout=30_000)
    assert slider.locator("#item-title").inner_text() == "Ivan Petrov"
    slider.locator("#send-to").select_option("+79991234567")
    slider.locator("#send-body").fill("Your order #42 is ready")
    slider.locator("#send-button").click()
    slider.locator("#send-result.ok").wait_for(timeout=30_000)
    save_screenshot(page, "sandbox-slider")
    assert play_beat(lambda: any(c["COMMENT"] and c["ENTITY_ID"] == contact
                                 for c in engine.b24_placements.timeline(sandbox.portal)))
    widget_message = Message.objects.get(portal=portal, body="Your order #42 is ready")
    assert play_beat(lambda: Message.objects.get(pk=widget_message.pk).status == "delivered")

    page.goto(f"{base}/sandbox/crm/contact/{contact}/")
    page.frame_locator("#field-frame").locator("#consent-view, #consent-empty").first.wait_for(timeout=30_000)
    page.locator("#card-send-body").fill("See you tomorrow at 10")
    page.locator("#card-send").click()
    page.locator("#card-send-result.ok").wait_for(timeout=30_000)
    assert play_beat(lambda: card_statuses(sandbox, contact) == ["delivered"])
    page.locator('#timeline li.sms[data-status="delivered"]').wait_for(timeout=10_000)
    pushed = [u["STATUS"] for u in engine.b24_messageservice.status_updates(sandbox.portal)]
    assert pushed[-1] == "delivered"  # our pushes, in order (sent on the way when a poll saw it)
    assert page.locator("#timeline li.comment").count() == 1  # the slider's send, written by our worker
    save_screenshot(page, "sandbox-card")

    page.locator("#field-mode").click()
    field = page.frame_locator("#field-frame")
    field.locator('.consent-row[data-phone="+79991234567"] input[value="N"]').check()
    field.locator("#consent-result.ok").wait_for(timeout=30_000)
    # setValue travels frame → BX24 shim → sandbox page → sandbox: the card shows it once it arrived
    page.wait_for_function("document.getElementById('field-value').textContent === '+79991234567:N'",
                           timeout=10_000)
    assert sandbox.field_values[("contact", contact)] == "+79991234567:N"
    save_screenshot(page, "sandbox-consent")

    page.locator("#card-send-body").fill("One more thing")
    page.locator("#card-send").click()
    page.locator("#card-send-result.ok").wait_for(timeout=30_000)
    assert play_beat(lambda: card_statuses(sandbox, contact)[0] == "failed")
    page.locator('#timeline li.sms[data-status="failed"]').wait_for(timeout=10_000)
    refused = Message.objects.get(portal=portal, body="One more thing")
    assert refused.last_error == "recipient opted out"

    page.goto(f"{base}/sandbox/log/")
    # our pushes go in batches: the batch's cmd names the method
    page.locator("#log tr", has_text="messageservice.message.status.update").first.wait_for(timeout=10_000)
    assert page.locator('#log tr[data-kind="oauth"]').count() >= 1
    assert page.locator("#log tr", has_text="event.bind").count() >= 1
    save_screenshot(page, "sandbox-log")

    # The app's own page, then "Uninstall": ONAPPUNINSTALL reaches our events handler.
    page.goto(f"{base}/sandbox/")
    page.locator("#open-app").click()
    page.frame_locator("#app-frame").locator("#accounts-card").wait_for(timeout=30_000)
    # the page fills its provider list from our API after it loads
    page.frame_locator("#app-frame").locator("#accounts", has_text="Sandbox SMS").wait_for(timeout=30_000)
    # The rest of the sandbox's BX24 SDK, from inside our frame: getAuth, callMethod, openApplication.
    app_frame = page.frame(name="app-frame")
    assert app_frame.evaluate("BX24.getAuth().member_id") == sandbox.member_id
    user = app_frame.evaluate(
        "new Promise(function (done) { BX24.callMethod('user.current', {}, function (r) { done(r.data()); }); })")
    assert user["ID"] == "1" and user["NAME"] == "Admin"
    app_frame.evaluate("BX24.openApplication({})")
    page.frame_locator("#slider-frame").locator("#accounts-card").wait_for(timeout=30_000)
    page.locator("#slider .slider-close").click()
    # A new app version: Bitrix24 drops our handlers, widgets and senders; ONAPPUPDATE makes us restore them.
    page.locator("#update-app").click()
    page.locator("#update-note").wait_for(timeout=30_000)
    assert play_beat(lambda: Portal.objects.get(pk=portal.pk).installed_version == 2 and bool(sandbox.senders())
                     and bool(sandbox.list_menu("contact")) and len(sandbox.event_bindings()) >= 3)
    page.locator("#uninstall").click()
    page.locator("#install").wait_for(timeout=30_000)
    portal.refresh_from_db()
    assert portal.status == Portal.Status.DELETED
    assert sandbox.uninstalled
