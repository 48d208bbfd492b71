"""Start-up checks say clearly what is wrong with the configuration."""

from __future__ import annotations

from b24portal.checks import check_configuration


def ids(settings) -> set[str]:
    return {problem.id for problem in check_configuration()}


def test_the_test_configuration_passes(settings):
    assert not {i for i in ids(settings) if ".E" in i}


def test_a_bad_public_url_is_an_error(settings):
    settings.PUBLIC_URL = "sms.example.com"
    assert "b24portal.E002" in ids(settings)


def test_a_bad_encryption_key_is_an_error(settings):
    settings.FIELD_ENCRYPTION_KEY = ["not-a-key"]
    assert "b24portal.E007" in ids(settings)


def test_an_empty_or_overbroad_allow_list_is_an_error(settings):
    settings.B24_PORTAL_DOMAINS = []
    assert "b24portal.E005" in ids(settings)
    settings.B24_PORTAL_DOMAINS = ["*"]
    assert "b24portal.E006" in ids(settings)


def test_missing_app_credentials_are_reported(settings):
    settings.B24_CLIENT_SECRET = ""
    assert "b24portal.W004" in ids(settings)


def test_sms_settings_are_checked(settings):
    settings.SMS_TTL_SENT_BECOMES = "maybe"
    settings.SMS_STATUS_TTL_HOURS = 0
    assert {"b24portal.E009", "b24portal.E010"} <= ids(settings)


def test_json_input_limits_are_checked(settings):
    assert "b24portal.E011" not in ids(settings)
    settings.INPUT_JSON_MAX_DEPTH = 5000  # json.loads would recurse past the interpreter's limit
    assert "b24portal.E011" in ids(settings)
    settings.INPUT_JSON_MAX_DEPTH = 32
    settings.INPUT_JSON_MAX_BYTES = 0
    assert "b24portal.E011" in ids(settings)


def test_http_webhook_urls_in_production_are_warned_about(settings):
    settings.DEBUG = False
    settings.B24_WEBHOOK_ALLOW_HTTP = True
    assert "b24portal.W011" in ids(settings)
    settings.B24_WEBHOOK_ALLOW_HTTP = False
    assert "b24portal.W011" not in ids(settings)
