"""The cabinet speaks the user's language: the one their frame token carries (Bitrix24's LANG when the widget
opened, or the portal's language after "Sign in with Bitrix24"); the signed-out page follows the browser."""

from __future__ import annotations

import pytest
from django.test import Client

from placements.frames import issue_frame_token
from tests.cabinet.test_pages import sms

from .conftest import framed_post, signed_in

pytestmark = pytest.mark.django_db


def test_the_templates_page_of_a_russian_user_is_in_russian(member):
    page = signed_in(member.portal, member.user_id, lang="ru").get("/cabinet/templates/")
    text = page.content.decode()

    assert page.status_code == 200 and '<html lang="ru">' in text
    for russian in ("SMS-кабинет", "Шаблоны SMS", "Новый шаблон", "Сохранить шаблон", "Поля для подстановки",
                    "Имя", "Номер элемента CRM"):
        assert russian in text, russian
    assert "New template" not in text and "First name" not in text


def test_the_same_page_of_an_english_user_stays_in_english(member):
    text = signed_in(member.portal, member.user_id, lang="en").get("/cabinet/templates/").content.decode()

    assert "New template" in text and "First name" in text and "Новый шаблон" not in text


def test_my_sms_in_a_russian_frame_names_statuses_and_crm_items_in_russian(client, member, sms_account, contact):
    sms(member.portal, sms_account, member.user_id, 1, contact=contact)
    token = issue_frame_token(member.portal, member.user_id, False, "ru")

    text = framed_post(client, "/cabinet/", token).content.decode()

    assert "Мои SMS" in text and "Контакт #" in text and "в очереди" in text and "принято" in text
    assert "Contact #" not in text


def test_the_administrators_page_counts_its_days_with_the_russian_plural(owner):
    text = signed_in(owner.portal, owner.user_id, is_admin=True, lang="ru").get("/cabinet/portal/").content.decode()

    assert "SMS-провайдеры" in text and "Доставка за последние 14 дней" in text
    assert "Ссылки в приложение" in text and "Delivery, last" not in text


def test_a_validation_error_of_a_russian_user_is_in_russian(member):
    browser = signed_in(member.portal, member.user_id, lang="ru")

    response = browser.post("/cabinet/templates/", {"action": "save", "name": "", "body": "Привет, {frist_name}"})

    text = response.content.decode()
    assert response.status_code == 400
    assert "Укажите название шаблона." in text and "Неизвестное поле для подстановки {frist_name}" in text


def test_the_signed_out_page_and_its_reason_follow_the_browsers_language(member):
    nobody = Client(HTTP_ACCEPT_LANGUAGE="ru-RU,ru;q=0.9,en;q=0.5").get("/cabinet/")
    forged = Client(HTTP_ACCEPT_LANGUAGE="ru").post("/cabinet/", {"frame_token": member.token[:-4] + "AAAA"})

    assert nobody.status_code == 401 and "Войти через Битрикс24" in nobody.content.decode()
    assert '<html lang="ru">' in nobody.content.decode()
    assert forged.status_code == 401 and "Ссылка на страницу недействительна" in forged.content.decode()
