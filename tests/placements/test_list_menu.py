"""The CRM list-menu slider: the item with the user's rights, its SMS history, sending through the queue."""

from __future__ import annotations

import pytest

from messageservice.models import Message
from oauth.models import PortalToken
from tests.fakes import b24_placements

from .conftest import LIST_MENU_URL, api, frame_token, post_frame

pytestmark = pytest.mark.django_db


def open_slider(client, fake_portal, entity: str, item_id, **kwargs):
    return post_frame(client, LIST_MENU_URL, fake_portal, f"CRM_{entity}_LIST_MENU",
                      {"ID": str(item_id), "URI": "/crm/contact/list/"}, **kwargs)


def test_it_shows_the_item_and_its_phones_read_with_the_users_own_token(client, installed_portal, fake_portal,
                                                                        contact, sms_account):
    fake_portal.add_user(5, is_admin=False)
    response = open_slider(client, fake_portal, "CONTACT", contact, user_id=5, is_admin=False)

    body = response.content.decode()
    assert response.status_code == 200
    assert "Ivan Petrov" in body and "+79991234567" in body and "+79997654321" in body
    assert "Main SMS" in body
    get = fake_portal.calls("crm.contact.get")[-1]
    assert get.user_id == 5  # the user's token, so Bitrix24's permissions apply
    assert PortalToken.objects.filter(portal=installed_portal, user_id=5, is_service=False).exists()


def test_it_sends_an_sms_through_the_queue_and_records_it_in_the_timeline(
        client, installed_portal, fake_portal, contact, sms_account, fake_smsru, django_capture_on_commit_callbacks):
    fake_portal.add_user(5, is_admin=False)
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact, user_id=5, is_admin=False))
    url = f"/b24/placements/api/items/CONTACT/{contact}/messages/"

    with django_capture_on_commit_callbacks(execute=True):
        response = api(client, "POST", url, token, {"account": sms_account.pk, "to": "+79991234567",
                                                    "body": "Your order is ready", "client_key": "submission-1"})

    assert response.status_code == 201, response.content
    message = Message.objects.get(pk=response.json()["id"])
    assert message.origin == Message.Origin.WIDGET and message.author_user_id == 5
    assert message.bindings == [{"OWNER_TYPE_ID": 3, "OWNER_ID": contact}]
    assert [m.body for m in fake_smsru.messages] == ["Your order is ready"]  # reached the carrier
    (comment,) = b24_placements.timeline(fake_portal)
    assert comment["ENTITY_TYPE"] == "contact" and comment["ENTITY_ID"] == contact and comment["AUTHOR_ID"] == 5
    history = api(client, "GET", url, token).json()["messages"]
    assert [row["id"] for row in history] == [message.pk]
    assert history[0]["status"] in ("queued", "sent", "delivered")


def test_a_deal_uses_its_contacts_phones_and_binds_both(client, installed_portal, fake_portal, contact, sms_account,
                                                        django_capture_on_commit_callbacks):
    deal = b24_placements.add_crm_item(fake_portal, "deal", {"TITLE": "Big deal", "CONTACT_ID": contact})
    token = frame_token(open_slider(client, fake_portal, "DEAL", deal))
    assert "+79991234567" in open_slider(client, fake_portal, "DEAL", deal).content.decode()

    with django_capture_on_commit_callbacks(execute=True):
        response = api(client, "POST", f"/b24/placements/api/items/DEAL/{deal}/messages/", token,
                       {"account": sms_account.pk, "to": "+79997654321", "body": "Hello", "client_key": "submission-1"})

    assert response.status_code == 201, response.content
    assert Message.objects.get().bindings == [{"OWNER_TYPE_ID": 2, "OWNER_ID": deal},
                                              {"OWNER_TYPE_ID": 3, "OWNER_ID": contact}]


def test_it_refuses_a_number_that_is_not_the_items(client, installed_portal, fake_portal, contact, sms_account):
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact))
    response = api(client, "POST", f"/b24/placements/api/items/CONTACT/{contact}/messages/", token,
                   {"account": sms_account.pk, "to": "+15550001111", "body": "x", "client_key": "submission-1"})

    assert response.status_code == 400 and "phone numbers" in response.json()["to"][0]
    assert not Message.objects.exists()


def test_an_item_token_cannot_read_or_send_for_another_item(client, installed_portal, fake_portal, contact,
                                                            sms_account):
    other = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Other"}, phones=["+79990001122"])
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact))

    assert api(client, "GET", f"/b24/placements/api/items/CONTACT/{other}/messages/", token).status_code == 403
    assert api(client, "POST", f"/b24/placements/api/items/CONTACT/{other}/messages/", token,
               {"account": sms_account.pk, "to": "+79990001122", "body": "x", "client_key": "submission-1"}).status_code == 403


def test_a_send_for_an_item_the_user_can_no_longer_read_is_a_403_and_sends_nothing(client, installed_portal,
                                                                                  fake_portal, contact, sms_account):
    fake_portal.add_user(5, is_admin=False)
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact, user_id=5, is_admin=False))
    b24_placements.state(fake_portal)["hidden"][("contact", contact)] = {5}  # access taken away meanwhile

    response = api(client, "POST", f"/b24/placements/api/items/CONTACT/{contact}/messages/", token,
                   {"account": sms_account.pk, "to": "+79991234567", "body": "x", "client_key": "submission-1"})

    assert response.status_code == 403 and "access" in response.json()["detail"]
    assert not Message.objects.exists()


def test_a_send_whose_user_token_is_gone_is_a_403_that_says_to_reopen_the_widget(client, installed_portal,
                                                                                 fake_portal, contact, sms_account):
    fake_portal.add_user(5, is_admin=False)
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact, user_id=5, is_admin=False))
    PortalToken.objects.filter(portal=installed_portal, user_id=5).delete()

    response = api(client, "POST", f"/b24/placements/api/items/CONTACT/{contact}/messages/", token,
                   {"account": sms_account.pk, "to": "+79991234567", "body": "x", "client_key": "submission-1"})

    assert response.status_code == 403 and "reopen the widget" in response.json()["detail"]
    assert not Message.objects.exists()


@pytest.mark.parametrize(("code", "http_status", "answer", "retryable"), [
    ("INTERNAL_SERVER_ERROR", 500, 503, True),
    ("ERROR_CORE", 400, 502, False),
])
def test_a_bitrix24_error_reading_the_item_for_a_send_is_a_503_or_502_and_sends_nothing(
        client, installed_portal, fake_portal, contact, sms_account, code, http_status, answer, retryable):
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact))
    fake_portal.fail_next("crm.contact.get", code, http_status=http_status)

    response = api(client, "POST", f"/b24/placements/api/items/CONTACT/{contact}/messages/", token,
                   {"account": sms_account.pk, "to": "+79991234567", "body": "x", "client_key": "submission-1"})

    assert response.status_code == answer
    assert response.json() == {"detail": f"Bitrix24: {code}", "retryable": retryable}
    assert not Message.objects.exists()


def test_a_hidden_item_is_a_clear_message_not_an_error(client, installed_portal, fake_portal):
    fake_portal.add_user(5, is_admin=False)
    secret = b24_placements.add_crm_item(fake_portal, "lead", {"TITLE": "Secret"}, phones=["+79991112233"],
                                         hidden_from={5})

    response = open_slider(client, fake_portal, "LEAD", secret, user_id=5, is_admin=False)

    assert response.status_code == 200
    assert "do not have access" in response.content.decode() and "Secret" not in response.content.decode()


@pytest.mark.parametrize(("placement", "item", "text"), [
    ("CRM_ORDER_LIST_MENU", "1", "does not work in"),
    ("CRM_CONTACT_LIST_MENU", "abc", "did not say which item"),
    ("CRM_CONTACT_LIST_MENU", "999999", "not found"),
])
def test_unknown_entities_and_items_are_explained(client, installed_portal, fake_portal, placement, item, text):
    response = post_frame(client, LIST_MENU_URL, fake_portal, placement, {"ID": item})

    assert response.status_code == 200
    assert text in response.content.decode()


def test_an_item_without_phones_says_so(client, installed_portal, fake_portal, sms_account):
    company = b24_placements.add_crm_item(fake_portal, "company", {"TITLE": "Acme"})

    body = open_slider(client, fake_portal, "COMPANY", company).content.decode()

    assert "has no phone numbers" in body and 'id="send-form"' not in body


def test_bad_send_input_is_a_400_and_stores_nothing(client, installed_portal, fake_portal, contact, sms_account):
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact))
    url = f"/b24/placements/api/items/CONTACT/{contact}/messages/"

    assert api(client, "POST", url, token, {"account": "x", "to": "+79991234567", "body": "hi"}).status_code == 400
    assert api(client, "POST", url, token, {"account": 999999, "to": "+79991234567", "body": "hi", "client_key": "submission-1"}).status_code == 404
    assert api(client, "POST", url, token, {"account": sms_account.pk, "to": "+79991234567"}).status_code == 400
    assert not Message.objects.exists()


def test_a_widget_send_needs_an_idempotency_key_and_a_repeat_returns_the_first_message(
        client, installed_portal, fake_portal, contact, sms_account, fake_smsru, django_capture_on_commit_callbacks):
    token = frame_token(open_slider(client, fake_portal, "CONTACT", contact))
    url = f"/b24/placements/api/items/CONTACT/{contact}/messages/"
    send = {"account": sms_account.pk, "to": "+79991234567", "body": "hi"}

    assert api(client, "POST", url, token, send).status_code == 400  # the page always sends a key
    assert not Message.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        first = client.post(url, data=send, content_type="application/json", HTTP_AUTHORIZATION=f"Frame {token}",
                            HTTP_IDEMPOTENCY_KEY="0b7c6f0e-1d2a-4f5e-9a8b-7c6d5e4f3a2b")
        again = client.post(url, data=send, content_type="application/json", HTTP_AUTHORIZATION=f"Frame {token}",
                             HTTP_IDEMPOTENCY_KEY="0b7c6f0e-1d2a-4f5e-9a8b-7c6d5e4f3a2b")

    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["id"] == again.json()["id"] == Message.objects.get().pk
    assert len(fake_smsru.messages) == 1 and len(b24_placements.timeline(fake_portal)) == 1
