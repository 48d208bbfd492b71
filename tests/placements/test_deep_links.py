"""Deep links (REST_APP_URI): bound and verified at install, written into each widget send's timeline comment,
opened by the fake portal as Bitrix24 does (the link's params[...] become PLACEMENT_OPTIONS), routed to the
item's slider; anything else is a clear page (bitrix24/b24restdocs api-reference/widgets/placements/
rest-app-uri.md)."""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import pytest
from django.conf import settings

from messageservice.models import Message
from oauth.client import PortalClient
from placements import bindings
from placements.models import Binding
from tests.fakes import b24_placements

from .conftest import api, frame_request, frame_token, post_frame

pytestmark = pytest.mark.django_db

APP_URI = "https://app.b24portal.test/b24/placements/app-uri/"
APP_URI_PATH = "/b24/placements/app-uri/"


def app_uri_rows(fake_portal):
    return [row for row in b24_placements.placements(fake_portal) if row["placement"] == "REST_APP_URI"]


def send_from_slider(client, fake_portal, contact, sms_account, capture, *, user_id: int = 5) -> Message:
    if user_id not in fake_portal.users:
        fake_portal.add_user(user_id, is_admin=False)
    token = frame_token(post_frame(client, "/b24/placements/crm-list-menu/", fake_portal, "CRM_CONTACT_LIST_MENU",
                                   {"ID": str(contact)}, user_id=user_id, is_admin=False))
    with capture(execute=True):
        response = api(client, "POST", f"/b24/placements/api/items/CONTACT/{contact}/messages/", token,
                       {"account": sms_account.pk, "to": "+79991234567", "body": "Your order is ready",
                        "client_key": f"submission-{user_id}"})
    assert response.status_code == 201, response.content
    return Message.objects.get(pk=response.json()["id"])


def open_link(client, fake_portal, link: str, *, user_id: int = 5):
    handler, query, form = b24_placements.open_app_link(fake_portal, link, user_id=user_id, is_admin=False)
    return client.post(f"{urlsplit(handler).path}?{urlencode(query)}", data=form)


def open_options(client, fake_portal, options: dict, *, user_id: int = 1, placement: str = "REST_APP_URI"):
    query, form = frame_request(fake_portal, placement, options, user_id=user_id)
    return client.post(f"{APP_URI_PATH}?{urlencode(query)}", data=form)


def test_install_binds_the_deep_link_handler_and_verifies_it(installed_portal, fake_portal):
    (row,) = app_uri_rows(fake_portal)
    assert row["handler"] == APP_URI and set(row["langAll"]) == {"en", "ru"}
    binding = Binding.objects.get(portal=installed_portal, code="REST_APP_URI")
    assert binding.kind == Binding.Kind.PLACEMENT and binding.state == Binding.State.BOUND
    # Verified against the portal after binding, not trusted from bind's "true".
    calls = list(fake_portal.requests)
    bind_at = max(i for i, r in enumerate(calls) if r.method == "placement.bind" and "REST_APP_URI" in str(r.params))
    assert any(r.method == "placement.get" for r in calls[bind_at + 1:])


def test_a_moved_deep_link_handler_is_rebound_by_unbinding_the_single_registration_first(installed_portal,
                                                                                         fake_portal):
    (row,) = app_uri_rows(fake_portal)
    row["handler"] = "https://old.b24portal.test/b24/placements/app-uri/"  # PUBLIC_URL changed since
    b24_placements.state(fake_portal)["placements"][:] = [
        r for r in b24_placements.state(fake_portal)["placements"] if r["placement"] != "REST_APP_URI"] + [row]

    report = bindings.sync(installed_portal, PortalClient(installed_portal), bindings.desired_app_uri(),
                           repair=True)

    assert report.repaired == ["REST_APP_URI"] and not report.errors
    assert [r["handler"] for r in app_uri_rows(fake_portal)] == [APP_URI]
    assert fake_portal.count("placement.unbind") == 1


def test_the_timeline_comment_links_to_the_slider_on_that_item_and_message(
        client, installed_portal, fake_portal, contact, sms_account, django_capture_on_commit_callbacks):
    message = send_from_slider(client, fake_portal, contact, sms_account, django_capture_on_commit_callbacks)

    (comment,) = b24_placements.timeline(fake_portal)
    (link,) = b24_placements.links_in(comment["COMMENT"])
    code = installed_portal.app_code or settings.B24_CLIENT_ID
    assert link == (f"/marketplace/view/{code}/?params%5Bentity%5D=CONTACT&params%5Bid%5D={contact}"
                    f"&params%5Bmessage%5D={message.pk}")
    assert comment["COMMENT"].startswith("SMS to +79991234567 via Main SMS: Your order is ready")


def test_opening_the_link_shows_the_items_slider_with_that_message_marked(
        client, installed_portal, fake_portal, contact, sms_account, django_capture_on_commit_callbacks):
    message = send_from_slider(client, fake_portal, contact, sms_account, django_capture_on_commit_callbacks)
    (link,) = b24_placements.links_in(b24_placements.timeline(fake_portal)[0]["COMMENT"])

    response = open_link(client, fake_portal, link)

    body = response.content.decode()
    assert response.status_code == 200, body
    assert "Ivan Petrov" in body and f'data-highlight="{message.pk}"' in body and 'id="send-form"' in body
    assert fake_portal.calls("crm.contact.get")[-1].user_id == 5  # read with the user's own token
    assert response["Content-Security-Policy"] == f"frame-ancestors {installed_portal.origin}"


@pytest.mark.parametrize("options", [
    {"URI": "/crm/"},  # no params at all
    {"entity": "CONTACT"},
    {"entity": "SPACESHIP", "id": "5"},
    {"entity": "CONTACT", "id": "abc"},
    {"entity": "CONTACT", "id": "5", "message": "1; DROP TABLE"},
    {"entity": ["CONTACT"], "id": {"x": 1}},
])
def test_unknown_or_malformed_link_params_are_a_clear_page(client, installed_portal, fake_portal, options):
    reads = fake_portal.count("crm.contact.get")

    response = open_options(client, fake_portal, options)

    assert response.status_code == 400
    assert "does not say which CRM item" in response.content.decode()
    assert fake_portal.count("crm.contact.get") == reads  # nothing asked of Bitrix24


def test_the_deep_link_page_only_answers_rest_app_uri(client, installed_portal, fake_portal, contact):
    response = open_options(client, fake_portal, {"entity": "CONTACT", "id": str(contact)},
                            placement="CRM_CONTACT_LIST_MENU")

    assert response.status_code == 400 and "only opens from a link" in response.content.decode()


def test_another_portals_message_is_forbidden(client, installed_portal, fake_portal, contact, sms_account,
                                              install_portal, django_capture_on_commit_callbacks):
    other_portal, other_fake = install_portal()
    b24_placements.install(other_fake.cloud)
    other_contact = b24_placements.add_crm_item(other_fake, "contact", {"NAME": "Eve"}, phones=["+79991234567"])
    foreign = Message.objects.create(
        portal=other_portal, account=sms_account, carrier="smsru", message_id="f" * 32, origin=Message.Origin.WIDGET,
        recipient_raw="+79991234567", body="theirs", bindings=[{"OWNER_TYPE_ID": 3, "OWNER_ID": other_contact}])

    response = open_options(client, fake_portal, {"entity": "CONTACT", "id": str(contact),
                                                  "message": str(foreign.pk)})

    assert response.status_code == 403
    assert "does not belong to this CRM item in this portal" in response.content.decode()


def test_a_message_of_another_item_is_forbidden(client, installed_portal, fake_portal, contact, sms_account,
                                                django_capture_on_commit_callbacks):
    message = send_from_slider(client, fake_portal, contact, sms_account, django_capture_on_commit_callbacks)
    other = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Other"}, phones=["+79990000000"])

    response = open_options(client, fake_portal, {"entity": "CONTACT", "id": str(other), "message": str(message.pk)})

    assert response.status_code == 403


def test_a_linked_item_the_user_may_not_see_is_explained(client, installed_portal, fake_portal):
    fake_portal.add_user(5, is_admin=False)
    secret = b24_placements.add_crm_item(fake_portal, "contact", {"NAME": "Secret"}, phones=["+79991112233"],
                                         hidden_from={5})

    response = open_options(client, fake_portal, {"entity": "CONTACT", "id": str(secret)}, user_id=5)

    assert response.status_code == 200 and "do not have access" in response.content.decode()


def test_the_fake_portal_opens_only_links_of_our_app_with_a_bound_handler(installed_portal, fake_portal):
    with pytest.raises(b24_placements.AppLinkUnavailable):
        b24_placements.open_app_link(fake_portal, "/marketplace/view/some.other.app/?params%5Bid%5D=1")
    handler, _query, form = b24_placements.open_app_link(
        fake_portal, f"/marketplace/view/{fake_portal.cloud.client_id}/?params%5Bid%5D=1&plain=2")
    assert handler == APP_URI and form["PLACEMENT"] == "REST_APP_URI"
    assert form["PLACEMENT_OPTIONS"].startswith("{") and '"id":"1"' in form["PLACEMENT_OPTIONS"]
    assert '"plain"' not in form["PLACEMENT_OPTIONS"] and '"URI":' in form["PLACEMENT_OPTIONS"]
