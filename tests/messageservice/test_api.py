"""The SMS API views authenticate no one themselves: routed without an app's authentication (placements
composes them with its frame token), every request is refused."""

from __future__ import annotations

import pytest
from rest_framework.test import APIRequestFactory

from messageservice import api


@pytest.mark.parametrize("view", [api.MyMessagesView, api.AccountListView, api.StatsView])
def test_it_refuses_a_request_when_no_app_supplied_authentication(view):
    response = view.as_view()(APIRequestFactory().get("/"))
    assert response.status_code in (401, 403)


@pytest.mark.django_db
def test_it_refuses_writes_too(sms_account):
    factory = APIRequestFactory()
    assert api.AccountDeactivateView.as_view()(factory.post("/", {}), pk=sms_account.pk).status_code in (401, 403)
    sms_account.refresh_from_db()
    assert sms_account.is_active
