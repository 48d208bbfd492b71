"""The SMS-consent field (view, edit, new card) and the app's main page (admin and other users)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messageservice.consent import consent_for, do_set_consent
from messageservice.models import Message, PhoneConsent
from oauth.models import PortalToken
from tests.fakes import b24_placements

from .conftest import APP_URL, CONSENT_URL, api, frame_token, post_frame

pytestmark = pytest.mark.django_db

CONSENT_API = "/b24/placements/api/consent/"


def field_options(mode: str, item_id, **extra):
    return {"MODE": mode, "ENTITY_ID": "CRM_CONTACT", "FIELD_NAME": "UF_CRM_SMS_CONSENT",
            "ENTITY_VALUE_ID": str(item_id), "VALUE": None, "MULTIPLE": "N", "MANDATORY": "N", "XML_ID": None,
            "ENTITY_DATA": {"entityTypeId": 3, "entityId": str(item_id), "module": "crm"}, **extra}


def test_view_mode_shows_each_phones_consent(client, installed_portal, fake_portal, contact):
    do_set_consent(installed_portal, phone="+79991234567", opted_in=False, user_id=7, source="widget")

    response = post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("view", contact))

    body = response.content.decode()
    assert response.status_code == 200
    assert "opted out" in body and "by user #7" in body
    assert "no decision" in body  # the second number


def test_edit_mode_records_consent_through_the_api(client, installed_portal, fake_portal, contact):
    fake_portal.add_user(5, is_admin=False)
    response = post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE",
                          field_options("edit", contact, MULTIPLE="Y", MANDATORY="Y"), user_id=5, is_admin=False)
    body = response.content.decode()
    assert 'type="radio"' in body and '"multiple": true' in body and "Required" in body

    result = api(client, "POST", CONSENT_API, frame_token(response),
                 {"phone": "+79991234567", "opted_in": True})

    assert result.status_code == 200
    decision = consent_for(installed_portal, ["+79991234567"])["+79991234567"]
    assert decision.opted_in and decision.changed_by_user_id == 5 and decision.source == "userfield"


def test_a_new_card_asks_to_save_the_item_first(client, installed_portal, fake_portal):
    response = post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("edit", 0))

    body = response.content.decode()
    assert response.status_code == 200 and "Save the item first." in body
    assert 'id="consent-phone"' not in body  # no free-form number: consent goes with an item's phones
    assert fake_portal.count("crm.contact.get") == 0


def test_bad_consent_input_is_refused(client, installed_portal, fake_portal, contact):
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("edit", contact)))

    assert api(client, "POST", CONSENT_API, token, {"phone": "nope", "opted_in": True}).status_code == 400
    assert api(client, "POST", CONSENT_API, token, {"phone": "+79991234567"}).status_code == 400
    assert not PhoneConsent.objects.exists()


# -- finding 7: consent is scoped to one CRM item the user can read and to that item's phones ----------------
def test_a_members_app_page_token_cannot_change_consent(client, member, contact):
    response = api(client, "POST", CONSENT_API, member.token, {"phone": "+79991234567", "opted_in": False})

    assert response.status_code == 403 and "consent field" in response.json()["detail"]
    assert not PhoneConsent.objects.exists()


def test_an_admins_app_page_token_cannot_change_consent_either(client, owner, contact):
    response = api(client, "POST", CONSENT_API, owner.token, {"phone": "+79991234567", "opted_in": False})

    assert response.status_code == 403
    assert not PhoneConsent.objects.exists()


def test_an_item_bound_token_cannot_change_a_phone_of_another_item(client, installed_portal, fake_portal, contact):
    other = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Other"}, phones=["+79990000001"])
    fake_portal.add_user(5, is_admin=False)
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE",
                                   field_options("edit", contact), user_id=5, is_admin=False))

    for phone in ("+79990000001", "+1 202 555 0100", "89990000001"):
        response = api(client, "POST", CONSENT_API, token, {"phone": phone, "opted_in": False})
        assert response.status_code == 403, (phone, response.content)
        assert "not one of the item's phone numbers" in response.json()["detail"]
    assert not PhoneConsent.objects.exists()
    assert other  # that item's number stays without a decision


def test_the_items_phone_is_compared_in_e164(client, installed_portal, fake_portal, contact):
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("edit", contact)))

    response = api(client, "POST", CONSENT_API, token, {"phone": "8 (999) 123-45-67", "opted_in": False})

    assert response.status_code == 200, response.content
    assert PhoneConsent.objects.get().phone == "+79991234567"


def test_an_item_the_user_can_no_longer_read_refuses_consent(client, installed_portal, fake_portal, contact):
    fake_portal.add_user(5, is_admin=False)
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE",
                                   field_options("edit", contact), user_id=5, is_admin=False))
    b24_placements.state(fake_portal)["hidden"][("contact", contact)] = {5}  # access taken away meanwhile

    response = api(client, "POST", CONSENT_API, token, {"phone": "+79991234567", "opted_in": False})

    assert response.status_code == 403 and "access" in response.json()["detail"]
    assert not PhoneConsent.objects.exists()


@pytest.mark.parametrize(("code", "http_status", "answer", "retryable"), [
    ("INTERNAL_SERVER_ERROR", 500, 503, True),
    ("ERROR_CORE", 400, 502, False),
])
def test_a_bitrix24_error_reading_the_item_refuses_consent_with_a_503_or_502(
        client, installed_portal, fake_portal, contact, code, http_status, answer, retryable):
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("edit", contact)))
    fake_portal.fail_next("crm.contact.get", code, http_status=http_status)

    response = api(client, "POST", CONSENT_API, token, {"phone": "+79991234567", "opted_in": False})

    assert response.status_code == answer
    assert response.json() == {"detail": f"Bitrix24: {code}", "retryable": retryable}
    assert not PhoneConsent.objects.exists()


def test_a_consent_change_whose_user_token_is_gone_is_a_403_that_says_to_reopen_the_field(
        client, installed_portal, fake_portal, contact):
    fake_portal.add_user(5, is_admin=False)
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE",
                                   field_options("edit", contact), user_id=5, is_admin=False))
    PortalToken.objects.filter(portal=installed_portal, user_id=5).delete()

    response = api(client, "POST", CONSENT_API, token, {"phone": "+79991234567", "opted_in": False})

    assert response.status_code == 403 and "reopen the field" in response.json()["detail"]
    assert not PhoneConsent.objects.exists()


def test_an_outsiders_tokens_cannot_change_consent_here(client, owner, outsider, contact):
    app_page = api(client, "POST", CONSENT_API, outsider.token, {"phone": "+79991234567", "opted_in": False})
    # An outsider's own item-bound token speaks for their portal and that item only (not our contact).
    theirs = b24_placements.add_crm_item(outsider.fake_portal, "contact", {"NAME": "X"}, phones=["+79995550000"])
    item_token = frame_token(post_frame(client, CONSENT_URL, outsider.fake_portal, "USERFIELD_TYPE",
                                        field_options("edit", theirs)))
    ours = api(client, "POST", CONSENT_API, item_token, {"phone": "+79991234567", "opted_in": False})

    assert app_page.status_code == 403 and ours.status_code == 403
    assert consent_for(owner.portal, ["+79991234567"])["+79991234567"] is None
    assert not PhoneConsent.objects.exists()


@pytest.mark.parametrize(("options", "text"), [
    ({"MODE": "delete"}, "Unknown field mode"),
    ({"ENTITY_ID": "TASKS_TASK"}, "only works on CRM"),
    ({"ENTITY_VALUE_ID": "x1"}, "not a number"),
])
def test_odd_field_options_are_explained(client, installed_portal, fake_portal, options, text):
    response = post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("view", 1) | options)

    assert response.status_code == 200 and text in response.content.decode()


def test_the_app_page_for_an_admin_manages_accounts(client, installed_portal, fake_portal,
                                                     django_capture_on_commit_callbacks):
    response = post_frame(client, APP_URL, fake_portal)
    assert 'id="accounts-card"' in response.content.decode() and 'id="chart"' in response.content.decode()
    token = frame_token(response)

    with django_capture_on_commit_callbacks(execute=True):
        created = api(client, "POST", "/b24/placements/api/accounts/", token,
                      {"carrier": "sandbox", "code": "demo", "name": "Demo", "credentials": {}})
    assert created.status_code == 201, created.content
    account_id = created.json()["id"]
    with django_capture_on_commit_callbacks(execute=True):
        assert api(client, "PATCH", f"/b24/placements/api/accounts/{account_id}/", token,
                   {"name": "Demo 2"}).json()["name"] == "Demo 2"
        tested = api(client, "POST", f"/b24/placements/api/accounts/{account_id}/test/", token,
                     {"to": "+79991234567"})
        assert tested.status_code == 201
        assert api(client, "POST", f"/b24/placements/api/accounts/{account_id}/deactivate/", token,
                   {}).json()["is_active"] is False
    bad = api(client, "POST", "/b24/placements/api/accounts/", token, {"carrier": "nope", "code": "x", "name": "x"})
    assert bad.status_code == 400 and "carrier" in bad.json()


def test_delivery_statistics_group_by_day_and_status(client, installed_portal, fake_portal, sms_account, outsider):
    now = timezone.now()

    def message(days_ago: int, status: str | None, state: str = "sent_to_carrier") -> None:
        Message.objects.create(portal=installed_portal, account=sms_account, carrier="smsru",
                               message_id=f"{days_ago}{status}{Message.objects.count()}".ljust(32, "0"),
                               origin="crm", recipient_raw="+79991234567", body="x", status=status, state=state,
                               created_at=now - timedelta(days=days_ago))

    message(0, "delivered")
    message(0, "delivered")
    message(0, None, "accepted")
    message(1, "failed")
    message(20, "delivered")  # outside the window
    Message.objects.create(portal=outsider.portal, account=sms_account, carrier="smsru", message_id="f" * 32, origin="crm",
                           recipient_raw="+1", body="x", status="delivered")  # another portal: never counted
    token = frame_token(post_frame(client, APP_URL, fake_portal))

    stats = api(client, "GET", "/b24/placements/api/stats/?days=14", token).json()

    assert len(stats["days"]) == 14 and stats["total"] == 4
    assert stats["series"]["delivered"][-1] == 2 and stats["series"]["queued"][-1] == 1
    assert stats["series"]["failed"][-2] == 1
    assert api(client, "GET", "/b24/placements/api/stats/?days=900", token).status_code == 400
    # ...and the other portal's admin sees only that one message.
    assert api(client, "GET", "/b24/placements/api/stats/?days=14", outsider.token).json()["total"] == 1


def test_the_app_page_for_other_users_lists_their_own_messages(client, installed_portal, fake_portal, sms_account):
    for author, body in ((5, "mine"), (6, "theirs")):
        Message.objects.create(portal=installed_portal, account=sms_account, carrier="smsru",
                               message_id=f"{author}".ljust(32, "a"), origin="widget", recipient_raw="+79991234567",
                               body=body, author_user_id=author)
    fake_portal.add_user(5, is_admin=False)

    response = post_frame(client, APP_URL, fake_portal, user_id=5, is_admin=False)

    body = response.content.decode()
    assert "mine" in body and "theirs" not in body and 'id="accounts-card"' not in body
    rows = api(client, "GET", "/b24/placements/api/my-messages/", frame_token(response)).json()
    assert [row["body"] for row in rows] == ["mine"]
