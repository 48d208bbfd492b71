from __future__ import annotations

import pytest


def test_health_answers_while_the_process_lives(client):
    response = client.get("/health/")
    assert response.status_code == 200 and response.json()["status"] == "ok"


@pytest.mark.django_db
def test_ready_checks_the_database_the_broker_and_redis(client):
    response = client.get("/health/ready/")
    body = response.json()
    assert response.status_code == 200, body
    assert body["checks"]["database"]["vendor"] == "postgresql"
    assert body["checks"]["broker"]["ok"] and body["checks"]["redis"]["ok"]


@pytest.mark.django_db
def test_ready_reports_an_unreachable_redis_as_unavailable(client, settings, monkeypatch):
    import b24portal.redis

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(b24portal.redis, "_client", None)
    response = client.get("/health/ready/")
    monkeypatch.setattr(b24portal.redis, "_client", None)
    assert response.status_code == 503
    assert response.json()["checks"]["redis"]["ok"] is False
