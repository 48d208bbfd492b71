"""The cabinet's pages: who gets in (a frame token POSTed by the app page, or the signed-in session's token),
framing and CSRF rules for each, the user's own SMS (paginated, no N+1), the administrators' page, and the
way in from the app page and the template picker in the slider."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from cabinet.access import SESSION_KEY
from messageservice.models import Message, MessageCrmLink, ProviderAccount
from tenants.models import Portal
from tests.placements.conftest import APP_URL, LIST_MENU_URL, frame_token, post_frame

from .conftest import framed_post, signed_in

pytestmark = pytest.mark.django_db


def sms(portal, account, author: int | None, n: int, *, contact: int | None = None) -> list[Message]:
    rows = []
    for i in range(n):
        message = Message.objects.create(
            portal=portal, account=account, carrier=account.carrier, message_id=f"{author}-{i}-{timezone.now().timestamp()}",
            origin=Message.Origin.WIDGET, recipient_raw="+79991234567", recipient="+79991234567",
            body=f"message {author}/{i}", author_user_id=author)
        if contact is not None:
            MessageCrmLink.objects.create(message=message, portal=portal, owner_type_id=3, owner_id=contact)
        rows.append(message)
    return rows


# -- who gets in --------------------------------------------------------------------------------------------------
def test_nobody_signed_in_gets_a_page_that_says_how_to_get_in(db):
    response = Client().get("/cabinet/")

    assert response.status_code == 401 and "Sign in with Bitrix24" in response.content.decode()


def test_a_token_from_before_a_reinstall_asks_to_sign_in_again(member):
    browser = signed_in(member.portal, member.user_id)
    Portal.objects.filter(pk=member.portal.pk).update(install_generation=member.portal.install_generation + 1)

    response = browser.get("/cabinet/")

    assert response.status_code == 401 and "reinstalled" in response.content.decode()
    assert SESSION_KEY not in browser.session  # dropped: the next visit starts from sign-in


def test_a_forged_frame_token_is_refused(client, member):
    response = framed_post(client, "/cabinet/", member.token[:-4] + "AAAA")

    assert response.status_code == 401 and "invalid frame token" in response.content.decode()


def test_signed_in_pages_are_never_framed_and_framed_pages_only_by_their_portal(client, member):
    signed = signed_in(member.portal, member.user_id).get("/cabinet/")
    framed = framed_post(client, "/cabinet/", member.token)

    assert signed.status_code == 200 and signed["X-Frame-Options"] == "DENY"
    assert framed.status_code == 200 and "X-Frame-Options" not in framed
    assert framed["Content-Security-Policy"] == f"frame-ancestors {member.portal.origin}"


def test_a_signed_in_post_needs_its_csrf_token(member):
    browser = signed_in(member.portal, member.user_id, enforce_csrf=True)

    refused = browser.post("/cabinet/templates/", {"action": "save", "name": "Mine", "body": "Hi"})
    page = browser.get("/cabinet/templates/")
    token = page.cookies["csrftoken"].value
    accepted = browser.post("/cabinet/templates/", {"action": "save", "name": "Mine", "body": "Hi",
                                                    "csrfmiddlewaretoken": token})

    assert refused.status_code == 403 and accepted.status_code == 302


def test_the_app_page_leads_into_the_cabinet_with_its_frame_token(client, owner, fake_portal):
    page = post_frame(client, APP_URL, fake_portal, user_id=1, is_admin=True).content.decode()

    assert 'id="open-cabinet"' in page and 'id="open-portal"' in page and 'name="frame_token"' in page
    token = frame_token(post_frame(client, APP_URL, fake_portal, user_id=1, is_admin=True))
    assert framed_post(client, "/cabinet/portal/", token).status_code == 200


# -- my SMS -------------------------------------------------------------------------------------------------------
def test_my_sms_lists_only_the_users_own_messages_page_by_page(owner, member, sms_account, contact):
    mine = sms(owner.portal, sms_account, member.user_id, 30, contact=contact)
    sms(owner.portal, sms_account, owner.user_id, 2)
    browser = signed_in(member.portal, member.user_id)

    first = browser.get("/cabinet/").content.decode()
    second = browser.get("/cabinet/?page=2").content.decode()

    assert first.count('<tr data-id=') == 25 and second.count('<tr data-id=') == 5
    assert f'data-id="{mine[-1].pk}"' in first and f'data-id="{mine[0].pk}"' in second  # newest first
    assert f"message {owner.user_id}/" not in first + second
    assert f"/crm/contact/details/{contact}/" in first and "page 2 of 2" in second


def test_my_sms_in_a_frame_pages_with_posts_that_carry_the_token(client, member, sms_account):
    sms(member.portal, sms_account, member.user_id, 26)

    second = framed_post(client, "/cabinet/?page=2", member.token).content.decode()

    assert second.count('<tr data-id=') == 1
    assert 'action="/cabinet/?page=1"' in second and f'value="{member.token}"' in second


def test_my_sms_costs_the_same_queries_for_one_message_or_a_full_page(member, sms_account, contact):
    browser = signed_in(member.portal, member.user_id)
    sms(member.portal, sms_account, member.user_id, 1, contact=contact)
    browser.get("/cabinet/")  # warm: session, content types
    with CaptureQueriesContext(connection) as one:
        browser.get("/cabinet/")
    sms(member.portal, sms_account, member.user_id, 24, contact=contact)
    with CaptureQueriesContext(connection) as many:
        browser.get("/cabinet/")

    assert len(many.captured_queries) == len(one.captured_queries)


# -- portal administrators ----------------------------------------------------------------------------------------
def test_the_portal_page_is_for_administrators_only(client, owner, member, sms_account):
    assert signed_in(member.portal, member.user_id).get("/cabinet/portal/").status_code == 403
    assert framed_post(client, "/cabinet/portal/", member.token).status_code == 403

    body = signed_in(owner.portal, owner.user_id, is_admin=True).get("/cabinet/portal/").content.decode()

    assert "Main SMS" in body and "<svg" in body and 'id="api-keys-and-sync-jobs"' in body
    assert "/marketplace/view/" in body


def test_the_portal_page_costs_the_same_queries_for_one_or_many_providers(owner, sms_account):
    browser = signed_in(owner.portal, owner.user_id, is_admin=True)
    browser.get("/cabinet/portal/")
    with CaptureQueriesContext(connection) as one:
        browser.get("/cabinet/portal/")
    for i in range(5):
        ProviderAccount.objects.create(portal=owner.portal, carrier="sandbox", code=f"extra{i}", name=f"Extra {i}")
    with CaptureQueriesContext(connection) as many:
        browser.get("/cabinet/portal/")

    assert len(many.captured_queries) == len(one.captured_queries)


def test_an_administrator_deactivates_a_provider_from_the_cabinet(owner, member, sms_account):
    refused = signed_in(member.portal, member.user_id).post("/cabinet/portal/", {"action": "deactivate",
                                                                                 "account": sms_account.pk})
    sms_account.refresh_from_db()
    assert refused.status_code == 403 and sms_account.is_active

    done = signed_in(owner.portal, owner.user_id, is_admin=True).post(
        "/cabinet/portal/", {"action": "deactivate", "account": sms_account.pk})

    sms_account.refresh_from_db()
    assert done.status_code == 302 and not sms_account.is_active


def test_another_portals_provider_cannot_be_deactivated(owner, outsider, sms_account):
    response = signed_in(outsider.portal, outsider.user_id, is_admin=True).post(
        "/cabinet/portal/", {"action": "deactivate", "account": sms_account.pk})

    sms_account.refresh_from_db()
    assert response.status_code == 404 and sms_account.is_active


# -- the slider's template picker ---------------------------------------------------------------------------------
def test_the_slider_offers_the_users_and_the_portals_templates(client, installed_portal, fake_portal, contact,
                                                               sms_account, make_template):
    fake_portal.add_user(5, is_admin=False)
    shared = make_template(installed_portal, None, "Shared one")
    mine = make_template(installed_portal, 5, "My one")
    make_template(installed_portal, 1, "The admin's own")

    body = post_frame(client, LIST_MENU_URL, fake_portal, "CRM_CONTACT_LIST_MENU", {"ID": str(contact)}, user_id=5,
                      is_admin=False).content.decode()

    assert 'id="template-picker"' in body
    assert f'<option value="{shared.pk}">Shared one (portal)</option>' in body
    assert f'<option value="{mine.pk}">My one</option>' in body and "The admin" not in body


def test_the_templates_page_costs_the_same_queries_for_one_or_many_templates(member, make_template):
    browser = signed_in(member.portal, member.user_id)
    make_template(member.portal, None, "Shared 0")
    browser.get("/cabinet/templates/")
    with CaptureQueriesContext(connection) as one:
        browser.get("/cabinet/templates/")
    for i in range(10):
        make_template(member.portal, None if i % 2 else member.user_id, f"Template {i}")
    with CaptureQueriesContext(connection) as many:
        body = browser.get("/cabinet/templates/").content.decode()

    assert body.count("<tr data-id=") == 11
    assert len(many.captured_queries) == len(one.captured_queries)


def test_malformed_cabinet_input_is_a_4xx_or_ignored_never_a_500(client, owner, member, settings):
    admin = signed_in(owner.portal, owner.user_id, is_admin=True)
    settings.B24_MAX_BODY_BYTES = 2000

    assert signed_in(member.portal, member.user_id).get("/cabinet/?page=-3&page=x").status_code == 200
    assert admin.post("/cabinet/portal/", {"action": "deactivate", "account": "9" * 40}).status_code == 404
    assert admin.post("/cabinet/portal/", {"action": "deactivate", "account": "-1"}).status_code == 404
    assert admin.post("/cabinet/templates/", data=b'{"action": "save"}', content_type="application/json").status_code == 200
    assert framed_post(client, "/cabinet/", "x" * 3000).status_code == 413  # over the body limit
    assert framed_post(client, "/cabinet/", "").status_code == 401
    assert client.put("/cabinet/").status_code == 405


def test_a_demoted_administrator_loses_the_portal_page_and_portal_wide_edits(client, installed_portal, fake_portal,
                                                                             make_template, settings):
    """Signed in, the session's token goes through the frames' admin re-proof (user.admin, own token)."""
    fake_portal.add_user(5, is_admin=True)
    frame_token(post_frame(client, APP_URL, fake_portal, user_id=5, is_admin=True))  # their token pair is kept
    shared = make_template(installed_portal, None, "Shared")
    browser = signed_in(installed_portal, 5, is_admin=True)
    assert browser.get("/cabinet/portal/").status_code == 200

    fake_portal.set_admin(5, False)
    settings.B24_ADMIN_PROOF_SECONDS = -1  # every admin claim is now older than the proof window

    assert browser.get("/cabinet/portal/").status_code == 403
    assert browser.post(f"/cabinet/templates/{shared.pk}/", {"action": "delete"}).status_code == 403


def test_a_sibling_app_plugs_its_card_into_the_portal_page_in_place_of_the_placeholder(owner, monkeypatch, tmp_path,
                                                                                      settings):
    from placements import extensions

    (tmp_path / "records_card.html").write_text('<section class="card" id="api-keys">keys of {{ addon.portal }}'
                                                '</section>')
    settings.TEMPLATES = [{**settings.TEMPLATES[0], "DIRS": [*settings.TEMPLATES[0]["DIRS"], tmp_path]}]
    monkeypatch.setattr(extensions, "_portal_sections", {})
    extensions.register_portal_section(
        "records", lambda principal: extensions.PageAddon("records_card.html", {"portal": principal.portal.domain}))

    body = signed_in(owner.portal, owner.user_id, is_admin=True).get("/cabinet/portal/").content.decode()

    assert f'<section class="card" id="api-keys">keys of {owner.portal.domain}</section>' in body
    assert 'id="api-keys-and-sync-jobs"' not in body


def test_another_users_app_page_leads_into_their_cabinet_without_the_portal_page(client, member, fake_portal):
    page = post_frame(client, APP_URL, fake_portal, user_id=member.user_id, is_admin=False).content.decode()

    assert 'id="open-cabinet"' in page and 'id="open-templates"' in page and 'id="open-portal"' not in page
