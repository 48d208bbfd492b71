"""The sandbox is development only: with DEBUG off its URLs answer 404 (production settings do not even
install or route it), the start-up check refuses an explicit enable, and the allow-list admits its host
only while it is on."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from b24portal.checks import check_configuration
from b24portal.domains import is_allowed_domain

pytestmark = pytest.mark.django_db

SANDBOX_URLS = ["/sandbox/", "/sandbox/crm/contact/", "/sandbox/crm/contact/101/", "/sandbox/log/",
                "/sandbox/log/entries/", "/sandbox/bx24.js", "/rest/app.info", "/sandbox/oauth/token/",
                "/sandbox/rest/app.info", "/sandbox/carrier/smsru/sms/send"]
SANDBOX_POSTS = ["/sandbox/frame/", "/sandbox/bx24/", "/sandbox/crm/contact/101/send/", "/sandbox/uninstall/",
                 "/sandbox/reset/", "/rest/app.info", "/sandbox/oauth/token/"]


def production_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SANDBOX_ENABLED", "DJANGO_SETTINGS_MODULE")}
    env.update(DJANGO_SETTINGS_MODULE="b24portal.settings", DEBUG="false", PUBLIC_URL="https://sms.example.com",
               SECRET_KEY="production-like-secret-key-production-like-secret-key",
               FIELD_ENCRYPTION_KEY=django_settings.FIELD_ENCRYPTION_KEY[0], **extra)
    return env


def test_with_the_sandbox_off_every_sandbox_url_answers_404(client, settings):
    assert settings.DEBUG is False and settings.SANDBOX_ENABLED is False
    for url in SANDBOX_URLS:
        assert client.get(url).status_code == 404, url
    for url in SANDBOX_POSTS:
        assert client.post(url, {"kind": "install"}).status_code == 404, url


def test_production_settings_neither_install_nor_route_the_sandbox():
    script = ("import django; django.setup(); from django.conf import settings; from django.urls import resolve, "
              "Resolver404\nprint('installed' if 'sandbox' in settings.INSTALLED_APPS else 'not installed')\n"
              "for url in ('/sandbox/', '/rest/app.info', '/sandbox/oauth/token/'):\n"
              "    try:\n        resolve(url); print('routed', url)\n"
              "    except Resolver404:\n        print('404', url)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=django_settings.BASE_DIR, env=production_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == ["not installed", "404 /sandbox/", "404 /rest/app.info",
                                             "404 /sandbox/oauth/token/"]


def test_the_start_up_check_refuses_an_explicit_enable_when_debug_is_off(settings):
    settings.DEBUG, settings.SANDBOX_ENABLED = False, True
    assert "b24portal.E013" in {problem.id for problem in check_configuration()}
    settings.DEBUG = True
    assert "b24portal.E013" not in {problem.id for problem in check_configuration()}


def test_manage_py_stops_on_an_explicit_enable_when_debug_is_off():
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=django_settings.BASE_DIR,
                            env=production_env(SANDBOX_ENABLED="1"), capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "b24portal.E013" in result.stderr and "SANDBOX_ENABLED" in result.stderr


def test_the_allow_list_admits_the_sandbox_host_only_while_the_sandbox_is_on(settings):
    settings.SANDBOX_DOMAIN = "127.0.0.1:8000"
    settings.B24_PORTAL_DOMAINS = ["*.bitrix24.com"]
    settings.SANDBOX_ENABLED = False
    assert not is_allowed_domain("127.0.0.1:8000")
    settings.SANDBOX_ENABLED = True
    assert is_allowed_domain("127.0.0.1:8000")
    assert not is_allowed_domain("127.0.0.1:8001") and not is_allowed_domain("127.0.0.1")
