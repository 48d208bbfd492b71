"""The cabinet's fixtures: the widget fakes and helpers of tests/placements, a way to visit the cabinet
signed in (the sign-in's session key, set directly) or in a frame (a POST carrying the frame token)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from cabinet.access import FRAME_FIELD, SESSION_KEY
from placements.frames import issue_frame_token
from tests.placements.conftest import _placement_fakes, contact, fake_smsru, sms_account  # noqa: F401  (fixtures)


def signed_in(portal: Any, user_id: int, *, is_admin: bool = False, lang: str = "en",
              enforce_csrf: bool = False) -> Client:
    """A browser after "Sign in with Bitrix24": the sign-in's contract is this session key."""
    client = Client(enforce_csrf_checks=enforce_csrf)
    session = client.session
    session[SESSION_KEY] = issue_frame_token(portal, user_id, is_admin, lang)
    session.save()
    return client


def framed_post(client: Client, url: str, token: str, **fields: Any):
    return client.post(url, {FRAME_FIELD: token, **fields})


@pytest.fixture
def make_template():
    from cabinet.models import SmsTemplate

    def make(portal: Any, owner_user_id: int | None, name: str = "Hello", body: str = "Hello, {first_name}!"):
        return SmsTemplate.objects.create(portal=portal, owner_user_id=owner_user_id, name=name, body=body,
                                          created_by_user_id=owner_user_id or 1, updated_by_user_id=owner_user_id or 1)

    return make
