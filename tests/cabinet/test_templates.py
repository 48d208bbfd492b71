"""SMS templates through the JSON API and the cabinet pages: scoped per portal and per user (404 for anyone
else's, never 403), portal-wide ones changed by proven administrators only (403, whatever a body or form
claims), placeholders checked at save and filled for the slider's item."""

from __future__ import annotations

import pytest

from cabinet.models import SmsTemplate
from oauth.models import PortalToken
from tests.conftest import post_event
from tests.fakes import b24_placements
from tests.placements.conftest import api, frame_token, post_frame

from .conftest import framed_post, signed_in

pytestmark = pytest.mark.django_db

LIST = "/cabinet/api/templates/"


def detail(pk: int) -> str:
    return f"/cabinet/api/templates/{pk}/"


def slider_token(client, fake_portal, contact, *, user_id: int, is_admin: bool = False) -> str:
    return frame_token(post_frame(client, "/b24/placements/crm-list-menu/", fake_portal, "CRM_CONTACT_LIST_MENU",
                                  {"ID": str(contact)}, user_id=user_id, is_admin=is_admin))


# -- scoping -------------------------------------------------------------------------------------------------------
def test_a_user_sees_their_own_and_the_portals_templates_only(client, owner, member, outsider, make_template):
    shared = make_template(owner.portal, None, "Shared")
    mine = make_template(owner.portal, member.user_id, "Mine")
    make_template(owner.portal, owner.user_id, "The owner's own")
    make_template(outsider.portal, None, "Another portal's shared")
    make_template(outsider.portal, member.user_id, "Same user id, another portal")

    rows = api(client, "GET", LIST, member.token).json()["templates"]

    assert [(r["id"], r["portal_wide"], r["editable"]) for r in rows] == [(shared.pk, True, False),
                                                                          (mine.pk, False, True)]


def test_another_users_personal_template_is_not_found(client, owner, member, make_template):
    theirs = make_template(owner.portal, owner.user_id, "Owner's")

    for method, data in (("GET", None), ("PATCH", {"body": "hijacked"}), ("DELETE", None)):
        assert api(client, method, detail(theirs.pk), member.token, data).status_code == 404, method
    assert api(client, "GET", f"{detail(theirs.pk)}fill/", member.token).status_code == 404
    theirs.refresh_from_db()
    assert theirs.body == "Hello, {first_name}!"


def test_another_portals_templates_are_not_found(client, owner, outsider, make_template):
    theirs = make_template(outsider.portal, None, "Theirs")
    personal = make_template(outsider.portal, owner.user_id, "Same user id")  # user ids never cross portals

    for template in (theirs, personal):
        assert api(client, "GET", detail(template.pk), owner.token).status_code == 404
        assert api(client, "PATCH", detail(template.pk), owner.token, {"body": "x"}).status_code == 404
        assert api(client, "DELETE", detail(template.pk), owner.token).status_code == 404
    assert SmsTemplate.objects.filter(portal=outsider.portal).count() == 2


def test_a_non_admin_cannot_add_or_change_portal_wide_templates_whatever_the_body_claims(client, owner, member,
                                                                                        make_template):
    shared = make_template(owner.portal, None, "Shared")

    created = api(client, "POST", LIST, member.token, {"name": "Mine for all", "body": "Hi", "portal_wide": True,
                                                       "is_admin": True})
    changed = api(client, "PATCH", detail(shared.pk), member.token, {"body": "changed", "is_admin": True})
    deleted = api(client, "DELETE", detail(shared.pk), member.token)

    assert (created.status_code, changed.status_code, deleted.status_code) == (403, 403, 403)
    assert "administrators" in created.json()["detail"]
    shared.refresh_from_db()
    assert shared.body == "Hello, {first_name}!" and SmsTemplate.objects.count() == 1


def test_an_admin_adds_and_changes_portal_wide_templates(client, owner, member):
    created = api(client, "POST", LIST, owner.token, {"name": "Ready", "body": "{name}, it is ready",
                                                      "portal_wide": True})
    assert created.status_code == 201, created.content
    template = SmsTemplate.objects.get()
    assert template.owner_user_id is None and template.created_by_user_id == owner.user_id

    changed = api(client, "PATCH", detail(template.pk), owner.token, {"body": "{first_name}, it is ready"})

    assert changed.status_code == 200 and changed.json()["portal_wide"] is True
    assert [r["name"] for r in api(client, "GET", LIST, member.token).json()["templates"]] == ["Ready"]


def test_a_user_manages_their_personal_templates(client, member):
    created = api(client, "POST", LIST, member.token, {"name": "Mine", "body": "Hi {first_name}"})
    pk = created.json()["id"]

    assert created.status_code == 201 and created.json()["portal_wide"] is False
    assert api(client, "PATCH", detail(pk), member.token, {"name": "Mine, renamed"}).json()["name"] == "Mine, renamed"
    assert api(client, "DELETE", detail(pk), member.token).status_code == 204
    assert not SmsTemplate.objects.exists()


@pytest.mark.parametrize(("data", "field"), [
    ({"name": "Typo", "body": "Hi {frist_name}"}, "body"),
    ({"name": "", "body": "Hi"}, "name"),
    ({"name": "Empty", "body": "   "}, "body"),
    ({"name": "x" * 101, "body": "Hi"}, "name"),
    ({"name": "Long", "body": "x" * 5001}, "body"),
])
def test_bad_template_input_is_a_400_and_stores_nothing(client, member, data, field):
    response = api(client, "POST", LIST, member.token, data)

    assert response.status_code == 400 and field in response.json()
    assert not SmsTemplate.objects.exists()


def test_an_unknown_placeholder_names_itself(client, member):
    response = api(client, "POST", LIST, member.token, {"name": "Typo", "body": "Hi {frist_name}"})

    assert "{frist_name}" in response.json()["body"][0]


def test_a_name_is_unique_per_owner_and_per_portal(client, owner, member, make_template):
    make_template(owner.portal, member.user_id, "Hello")

    again = api(client, "POST", LIST, member.token, {"name": "Hello", "body": "again"})
    for_someone_else = api(client, "POST", LIST, owner.token, {"name": "Hello", "body": "the owner's"})

    assert again.status_code == 400 and "already exists" in again.json()["name"][0]
    assert for_someone_else.status_code == 201


# -- filling for the slider's item --------------------------------------------------------------------------------
def test_the_fill_api_fills_a_template_for_the_sliders_item(client, installed_portal, fake_portal, make_template):
    company = b24_placements.add_crm_item(fake_portal, "company", {"TITLE": "Acme"})
    contact = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Ivan", "LAST_NAME": "Petrov",
                                                                    "COMPANY_ID": company},
                                          phones=["+79991234567", "+79997654321"])
    fake_portal.add_user(5, is_admin=False)
    template = make_template(installed_portal, None, "Ready", "{name} ({company}), call us from {phone}. #{id}")
    token = slider_token(client, fake_portal, contact, user_id=5)

    filled = api(client, "GET", f"{detail(template.pk)}fill/?to=%2B79997654321", token)
    default = api(client, "GET", f"{detail(template.pk)}fill/", token)

    assert filled.status_code == 200, filled.content
    assert filled.json()["body"] == f"Ivan Petrov (Acme), call us from +79997654321. #{contact}"
    assert default.json()["body"].endswith(f"from +79991234567. #{contact}")
    assert {c.user_id for c in fake_portal.calls("crm.company.get")} == {5}  # the user's own token


def test_a_value_the_item_lacks_is_filled_as_empty_text(client, installed_portal, fake_portal, contact,
                                                        make_template):
    template = make_template(installed_portal, 1, "Odd", "Dear {first_name}, {company}{title}!")
    token = slider_token(client, fake_portal, contact, user_id=1, is_admin=True)

    response = api(client, "GET", f"{detail(template.pk)}fill/", token)

    assert response.status_code == 200 and response.json()["body"] == "Dear Ivan, !"


def test_filling_needs_a_token_bound_to_a_crm_item(client, member, make_template):
    template = make_template(member.portal, None)

    response = api(client, "GET", f"{detail(template.pk)}fill/", member.token)

    assert response.status_code == 403 and "slider" in response.json()["detail"]


def test_filling_refuses_a_phone_that_is_not_the_items(client, installed_portal, fake_portal, contact, make_template):
    template = make_template(installed_portal, None)
    token = slider_token(client, fake_portal, contact, user_id=1, is_admin=True)

    response = api(client, "GET", f"{detail(template.pk)}fill/?to=%2B10000000000", token)

    assert response.status_code == 400 and "to" in response.json()


@pytest.mark.parametrize(("method", "code", "http_status", "answer", "retryable"), [
    ("crm.contact.get", "INTERNAL_SERVER_ERROR", 500, 503, True),  # reading the slider's item
    ("crm.contact.get", "ERROR_CORE", 400, 502, False),
    ("crm.company.get", "INTERNAL_SERVER_ERROR", 500, 503, True),  # reading its company for {company}
])
def test_a_bitrix24_error_while_filling_is_a_503_or_502(client, installed_portal, fake_portal, make_template,
                                                        method, code, http_status, answer, retryable):
    company = b24_placements.add_crm_item(fake_portal, "company", {"TITLE": "Acme"})
    contact = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Ivan", "COMPANY_ID": company},
                                          phones=["+79991234567"])
    template = make_template(installed_portal, None, "Ready", "{name} ({company})")
    token = slider_token(client, fake_portal, contact, user_id=1, is_admin=True)
    fake_portal.fail_next(method, code, http_status=http_status)

    response = api(client, "GET", f"{detail(template.pk)}fill/", token)

    assert response.status_code == answer
    assert response.json() == {"detail": f"Bitrix24: {code}", "retryable": retryable}


def test_filling_for_an_item_the_user_can_no_longer_read_is_a_403(client, installed_portal, fake_portal, contact,
                                                                 make_template):
    fake_portal.add_user(5, is_admin=False)
    template = make_template(installed_portal, None)
    token = slider_token(client, fake_portal, contact, user_id=5)
    b24_placements.state(fake_portal)["hidden"][("contact", contact)] = {5}  # access taken away meanwhile

    response = api(client, "GET", f"{detail(template.pk)}fill/", token)

    assert response.status_code == 403 and "access" in response.json()["detail"]


def test_filling_whose_user_token_is_gone_is_a_403_that_says_to_reopen_the_widget(client, installed_portal,
                                                                                  fake_portal, contact, make_template):
    fake_portal.add_user(5, is_admin=False)
    template = make_template(installed_portal, None)
    token = slider_token(client, fake_portal, contact, user_id=5)
    PortalToken.objects.filter(portal=installed_portal, user_id=5).delete()

    response = api(client, "GET", f"{detail(template.pk)}fill/", token)

    assert response.status_code == 403 and "reopen the widget" in response.json()["detail"]


def test_an_item_token_sees_only_its_portals_templates(client, installed_portal, fake_portal, contact, outsider,
                                                       make_template):
    foreign = make_template(outsider.portal, None, "Theirs")
    token = slider_token(client, fake_portal, contact, user_id=1, is_admin=True)

    assert api(client, "GET", LIST, token).json()["templates"] == []
    assert api(client, "GET", f"{detail(foreign.pk)}fill/", token).status_code == 404


# -- the pages ----------------------------------------------------------------------------------------------------
def test_the_templates_page_shows_only_the_users_and_the_portals_templates(owner, member, outsider, make_template):
    make_template(owner.portal, None, "Shared by the portal")
    make_template(owner.portal, member.user_id, "My own")
    make_template(owner.portal, owner.user_id, "The owner's secret")
    make_template(outsider.portal, None, "Another portal's")

    body = signed_in(owner.portal, member.user_id).get("/cabinet/templates/").content.decode()

    assert "Shared by the portal" in body and "My own" in body
    assert "The owner&#x27;s secret" not in body and "The owner's secret" not in body and "Another portal" not in body
    assert 'id="template-scope"' not in body  # a non-admin is not offered portal-wide templates


def test_foreign_templates_are_404_pages_signed_in_and_in_a_frame(client, owner, member, outsider, make_template):
    others = [make_template(owner.portal, owner.user_id, "Owner's"), make_template(outsider.portal, None, "Theirs")]
    browser = signed_in(member.portal, member.user_id)

    for template in others:
        url = f"/cabinet/templates/{template.pk}/"
        assert browser.get(url).status_code == 404
        assert browser.post(url, {"action": "delete"}).status_code == 404
        assert framed_post(client, url, member.token).status_code == 404
        assert framed_post(client, url, member.token, action="save", name="x", body="y").status_code == 404
    assert SmsTemplate.objects.count() == 2


def test_a_non_admin_cannot_change_a_portal_wide_template_on_the_page_even_with_a_forged_flag(owner, member,
                                                                                              make_template):
    shared = make_template(owner.portal, None, "Shared")
    browser = signed_in(member.portal, member.user_id)
    url = f"/cabinet/templates/{shared.pk}/"

    view = browser.get(url)
    saved = browser.post(url, {"action": "save", "name": "Shared", "body": "forged", "is_admin": "1"})
    deleted = browser.post(url, {"action": "delete", "is_admin": "Y"})
    created = browser.post("/cabinet/templates/", {"action": "save", "name": "For all", "body": "x",
                                                   "scope": "portal", "is_admin": "1"})

    assert view.status_code == 200 and 'id="template-form"' not in view.content.decode()
    assert (saved.status_code, deleted.status_code, created.status_code) == (403, 403, 403)
    shared.refresh_from_db()
    assert shared.body == "Hello, {first_name}!" and SmsTemplate.objects.count() == 1


def test_an_admin_adds_a_portal_wide_template_on_the_page(owner):
    browser = signed_in(owner.portal, owner.user_id, is_admin=True)

    response = browser.post("/cabinet/templates/", {"action": "save", "name": "Ready", "body": "{name}, ready",
                                                    "scope": "portal"})

    assert response.status_code == 302 and response["Location"] == "/cabinet/templates/"
    assert SmsTemplate.objects.get().owner_user_id is None


def test_an_unknown_placeholder_is_refused_on_the_page(member):
    response = signed_in(member.portal, member.user_id).post(
        "/cabinet/templates/", {"action": "save", "name": "Typo", "body": "Hi {frist_name}"})

    assert response.status_code == 400 and "{frist_name}" in response.content.decode()
    assert not SmsTemplate.objects.exists()


def test_a_template_is_edited_and_deleted_in_a_frame(client, member, make_template):
    mine = make_template(member.portal, member.user_id, "Mine")
    url = f"/cabinet/templates/{mine.pk}/"

    saved = framed_post(client, url, member.token, action="save", name="Mine", body="Bye {first_name}")
    mine.refresh_from_db()
    deleted = framed_post(client, url, member.token, action="delete")

    assert saved.status_code == 200 and "Template saved." in saved.content.decode() and mine.body == "Bye {first_name}"
    assert deleted.status_code == 200 and not SmsTemplate.objects.exists()


# -- uninstall --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("clean", "kept"), [(True, 0), (False, 2)])
def test_a_clean_uninstall_deletes_the_portals_templates_and_a_plain_one_keeps_them(client, installed_portal,
                                                                                  fake_portal, make_template,
                                                                                  clean, kept):
    make_template(installed_portal, None, "Shared")
    make_template(installed_portal, 5, "Personal")

    assert post_event(client, fake_portal.onappuninstall(clean=clean)).status_code == 200

    assert SmsTemplate.objects.filter(portal=installed_portal).count() == kept
