"""The fake carriers' time-dependent rules run on an injectable clock (plain pytest, no Django, no DB)."""

from __future__ import annotations

import threading
from email.utils import formatdate, parsedate_to_datetime

import requests

from .carriers import FakeSmsc, FakeSmsRu, FakeTwilio
from .clock import Clock

START = 1_700_000_000.0


def smsc_send(fake: FakeSmsc, text: str = "hi") -> dict[str, object]:
    params = {"login": fake.login, "psw": fake.password, "phones": "79990000000", "mes": text, "fmt": "3"}
    return requests.get(fake.base_url + "/sys/send.php", params=params, timeout=5).json()


def test_smsc_duplicate_window_closes_only_when_the_clock_moves() -> None:
    clock = Clock.manual(start=START)
    with FakeSmsc(clock=clock) as fake:
        assert "id" in smsc_send(fake) and "error" not in smsc_send(fake, "other text")
        assert smsc_send(fake) == {"error": "duplicate request, wait a minute", "error_code": 9}
        clock.advance(59.5)
        assert smsc_send(fake)["error_code"] == 9  # the refusal counts as a send: the window restarts
        clock.advance(60)
        assert "error" not in smsc_send(fake)
        status = requests.get(
            fake.base_url + "/sys/status.php",
            params={"login": fake.login, "psw": fake.password, "id": "1000", "phone": "79990000000", "fmt": "3"},
            timeout=5,
        ).json()
        assert status["last_timestamp"] == int(START)  # the first message's creation time, on the clock


def test_twilio_timestamps_come_from_the_clock() -> None:
    clock = Clock.manual(start=START)
    with FakeTwilio(clock=clock) as fake:
        created = requests.post(
            f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages.json",
            data={"To": "+15550000001", "From": "+15550000002", "Body": "hi"},
            auth=(fake.account_sid, fake.auth_token),
            timeout=5,
        ).json()
        assert created["date_created"] == formatdate(START, usegmt=True)
        clock.advance(90)
        fetched = requests.get(
            f"{fake.base_url}/2010-04-01/Accounts/{fake.account_sid}/Messages/{created['sid']}.json",
            auth=(fake.account_sid, fake.auth_token),
            timeout=5,
        ).json()
        assert fetched["date_created"] == created["date_created"]
        assert parsedate_to_datetime(fetched["date_updated"]).timestamp() == START + 90
        assert fake.messages[0].created == START


def test_response_delay_waits_for_the_clock() -> None:
    clock = Clock.manual()
    with FakeSmsRu(clock=clock) as fake:
        fake.response_delay = 5.0
        answers: list[int] = []

        def send() -> None:
            params = {"api_id": fake.api_id, "to": "79990000000", "msg": "hi", "json": "1"}
            answers.append(requests.get(fake.base_url + "/sms/send", params=params, timeout=30).status_code)

        worker = threading.Thread(target=send)
        worker.start()
        assert clock.wait_for_sleepers(1)
        assert answers == [] and len(fake.messages) == 1  # the send took effect; only the answer is late
        clock.advance(5)
        worker.join(timeout=10)
        assert answers == [200]


def test_carriers_default_to_a_running_clock() -> None:
    with FakeSmsRu() as fake:
        assert not fake.clock.frozen
