from __future__ import annotations

import pytest

from b24portal.domains import domain_of_endpoint, is_allowed_domain


@pytest.mark.parametrize("domain,allowed", [
    ("acme.bitrix24.com", True),
    ("a.b.bitrix24.ru", True),
    ("ACME.Bitrix24.com", True),
    ("bitrix24.com", False),
    ("acme.bitrix24.com.evil.com", False),
    ("evilbitrix24.com", False),
    ("acme.bitrix24.com:8443", False),
    ("127.0.0.1:8080", True),
    ("127.0.0.1", True),  # ":*" allows any port, the default one too
    ("127.0.0.2:8080", False),
    ("user@acme.bitrix24.com", False),
    ("", False),
])
def test_the_allow_list(domain, allowed):
    assert is_allowed_domain(domain) is allowed


def test_the_default_allow_list_covers_bitrix24_clouds_only(settings):
    from b24portal.settings import B24_CLOUD_ZONES

    settings.B24_PORTAL_DOMAINS = [f"*.bitrix24.{zone}" for zone in B24_CLOUD_ZONES]
    assert is_allowed_domain("firm.bitrix24.de") and is_allowed_domain("firm.bitrix24.com.br")
    assert not is_allowed_domain("127.0.0.1:80") and not is_allowed_domain("firm.example.com")


@pytest.mark.parametrize("endpoint,domain", [
    ("https://acme.bitrix24.com/rest/", "acme.bitrix24.com"),
    ("http://127.0.0.1:9000/rest/", "127.0.0.1:9000"),
    ("https://acme.bitrix24.com/other/", None),
    ("https://user@acme.bitrix24.com/rest/", None),
])
def test_domain_of_endpoint(endpoint, domain):
    assert domain_of_endpoint(endpoint) == domain
