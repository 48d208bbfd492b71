"""Carrier forms: each carrier declares its credential fields; admin's provider-account form renders labelled
inputs from them, validates with the carrier's rules and never shows a secret back (blank keeps it); the app
page's API describes the same fields; a test SMS is answered in words."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from messageservice import accounts
from messageservice.admin import ProviderAccountForm, credential_input
from messageservice.carriers import CARRIER_CHOICES, CredentialField, carrier_class
from messageservice.models import Message, ProviderAccount
from tenants.journal import Actor

pytestmark = pytest.mark.django_db

ADD_URL = "/admin/messageservice/provideraccount/add/"

#: a valid set of credentials per carrier, and the one the form must refuse (field, value, problem)
VALID: dict[str, dict[str, str]] = {
    "smsru": {"api_id": "9F8E7D6C-aaaa-bbbb-cccc-ddddeeeeffff"},
    "smsc": {"login": "acme", "password": "s3cret-pw"},
    "twilio": {"account_sid": "AC" + "0" * 32, "auth_token": "f" * 32},
    "sandbox": {},
}
INVALID: dict[str, tuple[str, str, str]] = {
    "smsru": ("api_id", "", "api_id is required"),
    "smsc": ("login", "acme", "password required (or an apikey)"),
    "twilio": ("account_sid", "nope", "account_sid must look like AC followed by 32 hex digits"),
}
KINDS = [kind for kind, _label in CARRIER_CHOICES]


@pytest.fixture
def staff_client(client: Any) -> Any:
    user = get_user_model().objects.create_superuser("support", "support@example.com", "pw")
    client.force_login(user)
    return client


def form_data(portal: Any, kind: str, creds: dict[str, str], code: str = "main") -> dict[str, str]:
    data = {"portal": str(portal.pk), "carrier": kind, "code": code, "name": "Main", "sender": "", "base_url": "",
            "options": "{}", "is_active": "on"}
    data.update({credential_input(kind, name): value for name, value in creds.items()})
    return data


@pytest.mark.parametrize("kind", KINDS)
def test_every_carrier_declares_its_fields_as_data(kind: str) -> None:
    fields = carrier_class(kind).credential_fields
    assert all(isinstance(f, CredentialField) and f.label and f.name for f in fields)
    assert carrier_class(kind).check_credentials(VALID[kind]) == []


@pytest.mark.parametrize("kind", [k for k in KINDS if carrier_class(k).credential_fields])
def test_the_admin_form_renders_labelled_inputs_secrets_as_password(staff_client: Any, kind: str) -> None:
    page = staff_client.get(ADD_URL).content.decode()
    for field in carrier_class(kind).credential_fields:
        name = credential_input(kind, field.name)
        tag = re.search(rf'<input[^>]*name="{name}"[^>]*>', page)
        assert tag, name
        assert ('type="password"' in tag.group(0)) == field.secret, tag.group(0)
        assert f'<label for="id_{name}">{field.label}' in page
        if field.hint:
            assert field.hint.split(":")[0] in page
    assert f"carrier-{kind}" in page  # the fieldset the page shows when the carrier is selected


@pytest.mark.parametrize("kind", list(INVALID))
def test_the_admin_form_validates_with_the_carriers_rules(b24_portal: Any, kind: str) -> None:
    field, value, problem = INVALID[kind]
    creds = {field: value} if value else {}
    form = ProviderAccountForm(data=form_data(b24_portal, kind, creds))
    assert not form.is_valid()
    assert problem in [e for errors in form.errors.values() for e in errors], form.errors
    assert set(form.errors) <= {credential_input(kind, f.name) for f in carrier_class(kind).credential_fields}
    assert ProviderAccountForm(data=form_data(b24_portal, kind, VALID[kind])).is_valid()


@pytest.mark.parametrize("kind", [k for k in KINDS if carrier_class(k).credential_fields])
def test_secrets_are_masked_and_blank_keeps_them(staff_client: Any, b24_portal: Any, kind: str,
                                                 django_capture_on_commit_callbacks: Any) -> None:
    with django_capture_on_commit_callbacks(execute=False):
        account = accounts.do_save_account(b24_portal, data={"carrier": kind, "code": "main", "name": "Main",
                                                             "credentials": VALID[kind]}, actor=Actor("staff", "t"))
    url = f"/admin/messageservice/provideraccount/{account.pk}/change/"
    page = staff_client.get(url).content.decode()
    for field in carrier_class(kind).credential_fields:
        value = VALID[kind].get(field.name, "")
        if not value:
            continue
        if field.secret:
            assert value not in page, field.name
            assert "Stored; leave blank to keep." in page
        else:
            assert f'value="{value}"' in page  # a login or account SID is not a secret
    # saving with every secret blank keeps the stored credentials
    blank = {f.name: ("" if f.secret else VALID[kind].get(f.name, "")) for f in carrier_class(kind).credential_fields}
    data = form_data(b24_portal, kind, blank)
    data.pop("portal")
    with django_capture_on_commit_callbacks(execute=False):
        response = staff_client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:2000]
    account.refresh_from_db()
    assert account.credentials == VALID[kind]


def test_the_app_page_api_describes_the_fields_and_never_returns_a_secret(sms_account: ProviderAccount) -> None:
    from messageservice.api import AccountSerializer

    data = AccountSerializer(sms_account).data
    assert data["credential_keys"] == ["api_id"]
    assert data["credential_values"] == {}  # api_id is a secret
    fields = {f.name: f.as_dict() for f in carrier_class("twilio").credential_fields}
    assert fields["account_sid"]["secret"] is False and fields["auth_token"]["secret"] is True
    assert "pattern" not in fields["account_sid"]


def test_a_test_sms_is_answered_in_words(sms_account: ProviderAccount, django_capture_on_commit_callbacks: Any,
                                         fake_smsru: Any) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        message = accounts.do_send_test_sms(sms_account.portal, sms_account, to="+79991234567",
                                            actor=Actor("staff", "t"))
    message.refresh_from_db()
    text, final = accounts.describe_test_result(message)
    assert final and text.startswith("SMS.ru accepted the message"), text
    message.state, message.last_error = Message.State.FAILED, "[200] Неправильный api_id"
    text, final = accounts.describe_test_result(message)
    assert final and text == "SMS.ru refused the message: [200] Неправильный api_id."
    message.state, message.last_error = Message.State.ACCEPTED, ""
    assert accounts.describe_test_result(message) == ("Queued; waiting for SMS.ru's answer.", False)
