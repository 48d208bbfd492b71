"""Start-up checks of the records settings."""

from __future__ import annotations

from typing import Any

import pytest

from records.checks import check_records_settings


def test_the_default_records_settings_pass():
    assert check_records_settings() == []


@pytest.mark.parametrize(("name", "value", "problem"), [
    ("RECORDS_PHONE_REGION", "XX", "records.E001"),
    ("RECORDS_THROTTLE", "lots", "records.E002"),
    ("RECORDS_CORS_ALLOWED_ORIGINS", ["crm.example.com"], "records.E003"),
    ("RECORDS_CORS_ALLOWED_ORIGINS", ["https://crm.example.com/path"], "records.E003"),
    ("RECORDS_BATCHES_PER_RUN", 0, "records.E004"),
    ("RECORDS_ORIGINATOR_ID", " ", "records.E005"),
])
def test_a_wrong_records_setting_is_named_at_start_up(settings: Any, name: str, value: Any, problem: str):
    setattr(settings, name, value)
    assert [error.id for error in check_records_settings()] == [problem]
