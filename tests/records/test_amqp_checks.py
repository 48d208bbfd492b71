"""Start-up checks of the AMQP intake and offline-event settings."""

from __future__ import annotations

from typing import Any

import pytest

from records.amqp import check_amqp_settings


def ids(settings: Any) -> list[str]:
    return [problem.id for problem in check_amqp_settings()]


def test_the_defaults_pass_and_amqp_is_off(settings: Any) -> None:
    assert settings.AMQP_URL == ""
    assert ids(settings) == []


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("AMQP_URL", "http://rabbit:5672/", "records.E101"),
    ("AMQP_URL", "amqp://", "records.E101"),
    ("AMQP_DEAD_LETTER_QUEUE", "amq.dead", "records.E102"),
    ("AMQP_DEAD_LETTER_QUEUE", "with space", "records.E102"),
    ("RECORDS_OFFLINE_POLL_SECONDS", 0, "records.E103"),
])
def test_a_setting_that_cannot_work_is_refused_at_start_up(settings: Any, name: str, value: Any,
                                                            problem: str) -> None:
    setattr(settings, name, value)
    assert ids(settings) == [problem]


def test_an_amqps_url_passes(settings: Any) -> None:
    settings.AMQP_URL = "amqps://user:secret@rabbit.example.com:5671/prod"
    assert ids(settings) == []
