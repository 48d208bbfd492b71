"""The records API over HTTP: auth, validation, idempotency, tenant isolation, CORS, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from b24portal.logging import redact
from records.keys import do_create_api_key, do_revoke_api_keys
from records.models import ApiKey, Record, SyncJob
from tenants.models import Portal
from tests.records.conftest import IVAN

pytestmark = pytest.mark.django_db


def post_create(api: APIClient, body: Any = None, **headers: str) -> Any:
    return api.post("/api/v1/records/", body if body is not None else IVAN, format="json", headers=headers)


def test_a_create_answers_202_with_the_job_as_soon_as_it_is_stored(api: APIClient,
                                                                    django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks(execute=False):
        response = post_create(api)
    assert response.status_code == 202, response.content
    job = SyncJob.objects.get()
    assert response.json()["id"] == job.pk and response.json()["state"] == "pending"
    assert response["Location"] == f"/api/v1/jobs/{job.pk}/"
    assert job.source == "http" and job.api_key is not None
    assert api.get(f"/api/v1/jobs/{job.pk}/").json()["external_id"] == "123"


def test_no_key_a_wrong_key_or_a_revoked_key_is_a_401(api_key: tuple[ApiKey, str]):
    assert post_create(APIClient()).status_code == 401
    wrong = APIClient()
    wrong.credentials(HTTP_AUTHORIZATION="Bearer b24p_not-a-real-key")
    assert post_create(wrong).status_code == 401
    do_revoke_api_keys([api_key[0]])
    revoked = APIClient()
    revoked.credentials(HTTP_AUTHORIZATION=f"Bearer {api_key[1]}")
    response = post_create(revoked)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert not SyncJob.objects.exists()


def test_a_key_is_stored_only_as_its_hash_and_notes_when_it_was_used(api: APIClient, api_key: tuple[ApiKey, str]):
    row, raw = api_key
    assert raw not in json.dumps(list(ApiKey.objects.values()), default=str)
    assert row.last_used_at is None
    api.get("/api/v1/records/nobody/")
    row.refresh_from_db()
    assert row.last_used_at is not None


def test_invalid_fields_are_a_400_with_field_errors_and_nothing_is_stored(api: APIClient):
    response = post_create(api, {"external_id": "1", "full_name": "Иван", "phone": "12", "email": "x"})
    assert response.status_code == 400
    assert set(response.json()) == {"phone", "email"}
    assert not Record.objects.exists() and not SyncJob.objects.exists()


def test_an_update_or_move_of_an_unknown_record_is_a_404(api: APIClient):
    assert api.patch("/api/v1/records/nobody/", {"full_name": "X"}, format="json").status_code == 404
    assert api.post("/api/v1/records/nobody/move/", {"stage": "NEW"}, format="json").status_code == 404
    assert api.get("/api/v1/records/nobody/").status_code == 404
    assert not SyncJob.objects.exists()


def test_update_and_move_store_their_jobs(api: APIClient, django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks(execute=False):
        post_create(api)
        update = api.patch("/api/v1/records/123/", {"full_name": "Иван Петров"}, format="json")
        move = api.post("/api/v1/records/123/move/", {"stage": "CONVERTED"}, format="json")
    assert update.status_code == 202 and move.status_code == 202
    assert list(SyncJob.objects.order_by("id").values_list("action", flat=True)) == ["create", "update", "move"]
    assert SyncJob.objects.get(action="move").payload == {"stage": "CONVERTED"}


def test_a_repeated_idempotency_key_answers_with_the_first_job(api: APIClient,
                                                               django_capture_on_commit_callbacks: Any):
    with django_capture_on_commit_callbacks(execute=False):
        first = post_create(api, **{"Idempotency-Key": "order-1"})
        again = post_create(api, **{"Idempotency-Key": "order-1"})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    assert SyncJob.objects.count() == 1


def test_a_key_reaches_only_its_own_portal(api: APIClient, install_portal: Any,
                                           django_capture_on_commit_callbacks: Any):
    other_portal, _ = install_portal()
    _, other_raw = do_create_api_key(other_portal, name="other")
    other = APIClient()
    other.credentials(HTTP_AUTHORIZATION=f"Bearer {other_raw}")
    with django_capture_on_commit_callbacks(execute=False):
        job_id = post_create(api).json()["id"]
    assert other.get(f"/api/v1/jobs/{job_id}/").status_code == 404
    assert other.get("/api/v1/records/123/").status_code == 404
    assert other.patch("/api/v1/records/123/", {"full_name": "X"}, format="json").status_code == 404
    assert SyncJob.objects.count() == 1


@pytest.mark.parametrize(("body", "content_type"), [
    (b"{not json", "application/json"),
    (b"[1, 2]", "application/json"),
    (b'"text"', "application/json"),
    (b"[" * 100 + b"]" * 100, "application/json"),
    (b'{"external_id": "1", "full_name": {"a": [1]}, "phone": 7}', "application/json"),
    (b'{"external_id": {"x": 1}}', "application/json"),
    (b'{"external_id": "a/b"}', "application/json"),
    (b'{"external_id": "1", "extra": [1]}', "application/json"),
    (b"\xff\xfe", "application/json"),
    (b"full_name=x", "application/x-www-form-urlencoded"),
    (json.dumps({"external_id": "1", "comment": "x" * 70000}).encode(), "application/json"),
])
def test_malformed_input_is_a_4xx_never_a_500_and_stores_nothing(api_key: tuple[ApiKey, str], body: bytes,
                                                                  content_type: str):
    client = Client()
    response = client.post("/api/v1/records/", data=body, content_type=content_type,
                           headers={"Authorization": f"Bearer {api_key[1]}"})
    assert 400 <= response.status_code < 500, response.content
    assert not SyncJob.objects.exists()


def test_cors_answers_only_configured_origins_and_only_under_api_v1(settings: Any, api_key: tuple[ApiKey, str]):
    settings.CORS_ALLOWED_ORIGINS = ["https://crm.example.com"]
    client = Client()
    preflight = client.options("/api/v1/records/", headers={
        "Origin": "https://crm.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key"})
    assert preflight["Access-Control-Allow-Origin"] == "https://crm.example.com"
    assert "idempotency-key" in preflight["Access-Control-Allow-Headers"]
    stranger = client.options("/api/v1/records/", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in stranger
    elsewhere = client.get("/health/", headers={"Origin": "https://crm.example.com"})
    assert "Access-Control-Allow-Origin" not in elsewhere


def test_by_default_no_origin_is_allowed(api_key: tuple[ApiKey, str]):
    response = Client().options("/api/v1/records/", headers={"Origin": "https://crm.example.com",
                                                             "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in response


def test_requests_beyond_the_throttle_get_a_429(settings: Any, api: APIClient):
    settings.RECORDS_THROTTLE = "2/min"
    codes = [api.get("/api/v1/records/nobody/").status_code for _ in range(3)]
    assert codes == [404, 404, 429]


def test_the_records_api_is_in_the_openapi_schema(api_key: tuple[ApiKey, str]):
    response = Client().get("/api/schema/", headers={"Accept": "application/json"})
    assert response.status_code == 200
    schema = response.json() if response["Content-Type"].startswith("application/json") else None
    text = response.content.decode()
    assert "/api/v1/records/" in text and "/api/v1/jobs/{job_id}/" in text
    assert schema is None or "ApiKey" in schema["components"]["securitySchemes"]


def test_an_api_key_is_never_written_to_the_logs(api_key: tuple[ApiKey, str]):
    raw = api_key[1]
    for text in (f"Authorization: Bearer {raw}", f'{{"HTTP_AUTHORIZATION": "Bearer {raw}"}}', f"key={raw}"):
        assert raw not in redact(text)


def test_a_key_of_an_uninstalled_or_blocked_portal_is_refused_with_a_403(api: APIClient, installed_portal: Any):
    for status in (Portal.Status.DELETED, Portal.Status.BLOCKED):
        Portal.objects.filter(pk=installed_portal.pk).update(status=status)
        response = post_create(api)
        assert response.status_code == 403 and "portal is" in response.json()["detail"]
    assert not SyncJob.objects.exists()
