"""Sign in with Bitrix24 in a real headless Chromium: our home page → the fake portal's own
/oauth/authorize/ page (over real HTTP) → Allow or Deny → our redirect URI on a live server → /cabinet/
with a session that carries the user's frame token. Sign-out ends it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore

from oauth.models import PortalToken
from placements.frames import read_frame_token
from signin import flow
from tests.browser import launch_chromium, playwright_or_skip, save_screenshot

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

sync_api = playwright_or_skip()


@pytest.fixture(scope="module")
def chromium(django_db_setup: Any, django_db_blocker: Any) -> Iterator[Any]:
    with pytest.MonkeyPatch.context() as patch:
        # Playwright's sync API runs an event loop in this thread; the test's own ORM calls are still sync.
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            instance = launch_chromium(playwright)
            yield instance
            instance.close()


@pytest.fixture
def page(chromium: Any, live_server: Any, b24_cloud: Any) -> Iterator[Any]:
    b24_cloud.redirect_uris[settings.B24_CLIENT_ID] = f"{live_server.url}/signin/callback/"
    context = chromium.new_context(viewport={"width": 900, "height": 640})
    yield context.new_page()
    context.close()


def session_key_of(page: Any) -> str | None:
    cookie = next((c for c in page.context.cookies() if c["name"] == settings.SESSION_COOKIE_NAME), None)
    if cookie is None:
        return None
    assert cookie["sameSite"] == "Lax" and cookie["httpOnly"]
    return str(cookie["value"])


def session_of(page: Any) -> dict[str, Any]:
    return SessionStore(session_key=session_key_of(page)).load()


def screenshot(page: Any, name: str) -> None:
    save_screenshot(page, name, docs=name == "signin-home")  # the README tour has that one only


def test_a_user_signs_in_with_bitrix24_in_a_real_browser_and_signs_out(page, live_server, installed_portal,
                                                                       fake_portal):
    fake_portal.add_user(5, is_admin=False)
    fake_portal.browser_user = 5
    page.goto(f"{live_server.url}/")
    page.fill("#portal", fake_portal.domain)
    screenshot(page, "signin-home")
    page.click("#signin")

    page.wait_for_url(f"http://{fake_portal.domain}/oauth/authorize/**")
    screenshot(page, "signin-authorize")
    page.click("#allow")

    page.wait_for_url(f"{live_server.url}/cabinet/")
    principal = read_frame_token(session_of(page)[flow.FRAME_TOKEN_KEY])
    assert (principal.portal.pk, principal.user_id, principal.is_admin) == (installed_portal.pk, 5, False)
    assert PortalToken.objects.filter(portal=installed_portal, user_id=5, is_service=False).exists()

    page.goto(f"{live_server.url}/")
    assert fake_portal.domain in page.locator("#signed-in").inner_text()
    signed_in_key = session_key_of(page)
    page.click("#signout")
    page.locator("#signin-form").wait_for()
    assert session_key_of(page) is None
    assert not SessionStore().exists(signed_in_key)


def test_a_user_who_denies_access_in_a_real_browser_lands_on_a_clear_page(page, live_server, installed_portal,
                                                                          fake_portal):
    fake_portal.add_user(6, is_admin=False)
    fake_portal.browser_user = 6
    page.goto(f"{live_server.url}/")
    page.fill("#portal", fake_portal.domain)
    page.click("#signin")
    page.wait_for_url(f"http://{fake_portal.domain}/oauth/authorize/**")

    with page.expect_response(lambda r: "/signin/callback/" in r.url) as answer:
        page.click("#deny")

    assert answer.value.status == 403
    assert "did not allow" in page.locator("#reason").inner_text()
    assert not PortalToken.objects.filter(portal=installed_portal, user_id=6).exists()
    screenshot(page, "signin-denied")
