"""The cabinet and the slider's template picker in a real headless Chromium (the machinery of
tests/placements/test_browser.py: a host page on the fake portal's origin frames our live server). The
signed-in cabinet is opened with the session cookie the sign-in would have set. Screenshots as there
(UPDATE_SCREENSHOTS=1 refreshes the README tour's copies)."""

from __future__ import annotations

from importlib import import_module
from typing import Any

import pytest
from django.conf import settings

from cabinet.access import SESSION_KEY
from cabinet.models import SmsTemplate
from messageservice.models import Message, MessageCrmLink
from placements.frames import issue_frame_token
from tests.browser import save_screenshot
from tests.fakes import b24_placements
from tests.placements import test_browser as placements_browser  # skips this module too without Chromium
from tests.placements.conftest import APP_URL, LIST_MENU_URL, frame_request

# The browser fixtures of the widget tests, used here as they are.
_sync_playwright_and_django = placements_browser._sync_playwright_and_django
browser = placements_browser.browser
b24 = placements_browser.b24

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page: Any, name: str) -> None:
    save_screenshot(page, name, full_page=True)


def test_picking_a_template_in_the_slider_fills_the_text_for_the_item_and_sends_it(
        b24, fake_portal, installed_portal, sms_account, fake_smsru):
    company = b24_placements.add_crm_item(fake_portal, "company", {"TITLE": "Acme Ltd"})
    contact = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Ivan", "LAST_NAME": "Petrov",
                                                                    "COMPANY_ID": company},
                                          phones=["+79991234567", "+79997654321"])
    fake_portal.add_user(5, is_admin=False)
    shared = SmsTemplate.objects.create(portal=installed_portal, owner_user_id=None, name="Order ready",
                                        body="{first_name}, your Acme order is ready. Questions: reply to {phone}.",
                                        created_by_user_id=1, updated_by_user_id=1)
    SmsTemplate.objects.create(portal=installed_portal, owner_user_id=5, name="Call me back",
                               body="{name} ({company}), please call me back.", created_by_user_id=5,
                               updated_by_user_id=5)
    query, form = frame_request(fake_portal, "CRM_CONTACT_LIST_MENU", {"ID": str(contact)}, user_id=5,
                                is_admin=False)
    frame = b24.open(LIST_MENU_URL, query, form)

    frame.locator("#template-picker").wait_for()
    frame.locator("#send-to").select_option("+79997654321")
    frame.locator("#template-picker").select_option(label="Call me back")
    body = frame.locator("#send-body")
    b24.page.frame("app").wait_for_function("document.getElementById('send-body').value.length > 0")
    assert body.input_value() == "Ivan Petrov (Acme Ltd), please call me back."
    frame.locator("#template-picker").select_option(str(shared.pk))
    b24.page.frame("app").wait_for_function("document.getElementById('send-body').value.startsWith('Ivan, your')")
    assert body.input_value() == "Ivan, your Acme order is ready. Questions: reply to +79997654321."
    b24.screenshot("crm-list-menu-templates")
    frame.locator("#send-button").click()
    frame.locator("#send-result.ok").wait_for()

    message = Message.objects.get(portal=installed_portal)
    assert message.body == "Ivan, your Acme order is ready. Questions: reply to +79997654321."
    assert [m.body for m in fake_smsru.messages] == [message.body]


def test_the_cabinet_opens_inside_the_app_frame_and_keeps_its_token_across_pages(b24, fake_portal, installed_portal):
    query, form = frame_request(fake_portal)  # the installing administrator
    frame = b24.open(APP_URL, query, form)

    frame.locator("#open-templates").click()
    frame.locator("#template-form").wait_for()
    frame.locator("#template-name").fill("Welcome")
    frame.locator("#template-scope").select_option("portal")
    frame.locator("#template-body").fill("Welcome to Acme, {first_name}!")
    frame.locator("#template-save").click()
    frame.locator("#note").wait_for()

    template = SmsTemplate.objects.get(portal=installed_portal)
    assert template.owner_user_id is None and template.created_by_user_id == 1
    assert "Welcome to Acme" in frame.locator("#templates").inner_text()
    frame.locator("#tabs button:has-text('Portal')").click()
    frame.locator("#api-keys-and-sync-jobs").wait_for()
    b24.screenshot("cabinet-in-frame", docs=False)


def test_the_signed_in_cabinet_on_our_own_site(browser, live_server, installed_portal, sms_account, contact):
    for i, (body, status) in enumerate((("Your order #1041 has shipped", "delivered"),
                                        ("Reminder: your visit is tomorrow at 10:00", "sent"),
                                        ("Your code is 4471", "failed"))):
        message = Message.objects.create(
            portal=installed_portal, account=sms_account, carrier="smsru", message_id=f"{i}".ljust(32, "a"),
            origin=Message.Origin.WIDGET, recipient_raw="+79991234567", recipient="+79991234567", body=body,
            author_user_id=1, status=None if status == "failed" else status,
            state=Message.State.FAILED if status == "failed" else Message.State.HANDED_TO_CARRIER,
            last_error="[7] no route to the number" if status == "failed" else "")
        MessageCrmLink.objects.create(message=message, portal=installed_portal, owner_type_id=3, owner_id=contact)
    SmsTemplate.objects.create(portal=installed_portal, owner_user_id=None, name="Order shipped",
                               body="{first_name}, your order has shipped.", created_by_user_id=1, updated_by_user_id=1)
    SmsTemplate.objects.create(portal=installed_portal, owner_user_id=1, name="Call me back",
                               body="{name} ({company}), please call me back.", created_by_user_id=1,
                               updated_by_user_id=1)
    session = import_module(settings.SESSION_ENGINE).SessionStore()
    session[SESSION_KEY] = issue_frame_token(installed_portal, 1, True, "en")
    session.save()
    context = browser.new_context(viewport={"width": 1100, "height": 640})
    context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": session.session_key,
                          "url": live_server.url}])
    page = context.new_page()
    try:
        response = page.goto(f"{live_server.url}/cabinet/")
        assert response.status == 200 and response.headers["x-frame-options"] == "DENY"
        assert page.locator("#my-messages tbody tr[data-id]").count() == 3
        shot(page, "cabinet-signed-in")
        page.locator("#tabs a:has-text('SMS templates')").click()
        page.locator("#templates tbody tr.portal-wide").wait_for()
        shot(page, "cabinet-templates")
        page.locator("#tabs a:has-text('Portal')").click()
        page.locator("#api-keys-and-sync-jobs").wait_for()
        assert "Main SMS" in page.locator("#accounts").inner_text()
        shot(page, "cabinet-portal")
    finally:
        context.close()
