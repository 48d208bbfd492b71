"""Our own site's sign-in pages follow the browser's language (Django's locale middleware reads
Accept-Language): a Russian browser gets the form and every refusal in Russian."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.fakes.bitrix24 import FakeBitrix24Cloud

pytestmark = pytest.mark.django_db

RUSSIAN_BROWSER = "ru-RU,ru;q=0.9,en-US;q=0.8,en;q=0.7"


def test_the_home_page_in_a_russian_browser_is_in_russian(db: Any) -> None:
    response = Client(HTTP_ACCEPT_LANGUAGE=RUSSIAN_BROWSER).get("/")
    text = response.content.decode()

    assert response.status_code == 200 and '<html lang="ru">' in text
    assert "Войти через Битрикс24" in text and "Адрес вашего Битрикс24" in text
    assert 'placeholder="yourcompany.bitrix24.ru"' in text and "Sign in with Bitrix24" not in text


def test_the_home_page_in_an_english_browser_stays_in_english(db: Any) -> None:
    text = Client(HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").get("/").content.decode()

    assert '<html lang="en">' in text and "Sign in with Bitrix24" in text and "Войти" not in text


def test_a_refusal_and_the_install_hint_are_in_russian(db: Any, b24_cloud: FakeBitrix24Cloud) -> None:
    browser = Client(HTTP_ACCEPT_LANGUAGE=RUSSIAN_BROWSER)
    stranger = b24_cloud.create_portal()

    empty = browser.post("/signin/", {"portal": ""}).content.decode()
    not_installed = browser.post("/signin/", {"portal": stranger.domain})

    assert "Введите адрес вашего Битрикс24" in empty and "Вход не выполнен" in empty
    text = not_installed.content.decode()
    assert not_installed.status_code == 404
    assert f"Приложение b24portal не установлено на портале {stranger.domain}." in text
    assert "Попросите администратора вашего Битрикс24 установить приложение b24portal" in text
