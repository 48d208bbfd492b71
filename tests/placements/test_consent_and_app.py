"""The SMS-consent field (view, edit, new card) and the app's main page (admin and other users)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from messageservice.consent import consent_for, do_set_consent
from messageservice.models import Message

from .conftest import APP_URL, CONSENT_URL, api, frame_token, post_frame

pytestmark = pytest.mark.django_db


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

    result = api(client, "POST", "/b24/placements/api/consent/", frame_token(response),
                 {"phone": "+79991234567", "opted_in": True})

    assert result.status_code == 200
    decision = consent_for(installed_portal, ["+79991234567"])["+79991234567"]
    assert decision.opted_in and decision.changed_by_user_id == 5 and decision.source == "userfield"


def test_a_new_card_offers_a_phone_input(client, installed_portal, fake_portal):
    response = post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("edit", 0))

    assert response.status_code == 200 and 'id="consent-phone"' in response.content.decode()
    assert fake_portal.count("crm.contact.get") == 0


def test_bad_consent_input_is_refused(client, installed_portal, fake_portal):
    token = frame_token(post_frame(client, CONSENT_URL, fake_portal, "USERFIELD_TYPE", field_options("edit", 0)))

    assert api(client, "POST", "/b24/placements/api/consent/", token, {"phone": "nope", "opted_in": True}
               ).status_code == 400
    assert api(client, "POST", "/b24/placements/api/consent/", token, {"phone": "+79991234567"}).status_code == 400


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
