"""Records fixtures: an installed portal on the fake cloud (its CRM lead methods from tests/fakes/b24_crm.py),
an API key for it, and a DRF client that sends the key."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from records.keys import do_create_api_key
from records.models import ApiKey


@pytest.fixture
def api_key(installed_portal: Any) -> tuple[ApiKey, str]:
    return do_create_api_key(installed_portal, name="billing")


@pytest.fixture
def api(api_key: tuple[ApiKey, str]) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    return client


IVAN = {"external_id": "123", "full_name": "Иван Иванов", "phone": "+77001112233", "stage": "NEW"}
