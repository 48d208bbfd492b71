"""SmsRuCarrier against FakeSmsRu over real HTTP."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import requests
import responses

from messageservice.carriers import CarrierError, SendOutcomeUnknown, get_carrier
from messageservice.carriers.smsru import STATUS_MAP, SmsRuCarrier
from messageservice.status import DeliveryStatus
from tests.fakes.carriers import FakeSmsRu
from tests.fakes.clock import Clock

S = DeliveryStatus
TO = "+79991234567"

# the carrier's published status table, written out independently of the module
EXPECTED = {
    "-1": S.FAILED,
    "100": S.QUEUED,
    "101": S.QUEUED,
    "102": S.SENT,
    "103": S.DELIVERED,
    "104": S.UNDELIVERED,
    "105": S.FAILED,
    "106": S.UNDELIVERED,
    "107": S.UNDELIVERED,
    "108": S.FAILED,
    "110": S.DELIVERED,
    "150": S.FAILED,
}


@pytest.fixture
def fake() -> Iterator[FakeSmsRu]:
    with FakeSmsRu() as server:
        yield server


@pytest.fixture
def frozen_fake() -> Iterator[FakeSmsRu]:
    """The fake on a frozen clock: a delayed answer (`response_delay`) comes only when the test advances
    `frozen_fake.clock`, so a read timeout or an overlap of two requests is certain, whatever the load."""
    with FakeSmsRu(clock=Clock.manual()) as server:
        yield server


def make(fake: FakeSmsRu, sender: str = "MyShop", **options: object) -> SmsRuCarrier:
    options.setdefault("timeout", (2.0, 5.0))
    carrier = get_carrier(
        "smsru", credentials=fake.credentials, sender=sender, base_url=fake.base_url, options=options
    )
    assert isinstance(carrier, SmsRuCarrier)
    return carrier


def test_it_sends_and_returns_id_and_status(fake: FakeSmsRu) -> None:
    result = make(fake).send(TO, "Привет", reference="m1")

    assert (result.status, result.raw_status) == (S.QUEUED, "100")
    [sent] = fake.messages
    assert (sent.id, sent.to, sent.body, sent.sender) == (
        result.carrier_message_id,
        "79991234567",
        "Привет",
        "MyShop",
    )
    params = fake.requests_for("send")[0].params
    assert (params["api_id"], params["json"]) == (fake.api_id, "1")


def test_it_leaves_out_the_sender_when_there_is_none(fake: FakeSmsRu) -> None:
    make(fake, sender="").send(TO, "x", reference="m1")

    assert "from" not in fake.requests_for("send")[0].params


def test_it_fetches_many_statuses_in_one_request(fake: FakeSmsRu) -> None:
    carrier = make(fake)
    ids = [carrier.send(TO, f"m{i}", reference=str(i)).carrier_message_id for i in range(3)]
    fake.set_status(ids[0], 103)
    fake.set_status(ids[1], 104)

    results = carrier.fetch_statuses(ids)

    assert len(fake.requests_for("status")) == 1
    assert fake.requests_for("status")[0].params["sms_id"] == ",".join(ids)
    assert [results[i].status for i in ids] == [S.DELIVERED, S.UNDELIVERED, S.QUEUED]
    assert results[ids[1]].error == "Не может быть доставлено: время жизни истекло"


def test_it_splits_large_polls_into_batches(fake: FakeSmsRu) -> None:
    ids = [f"000000-{i}" for i in range(SmsRuCarrier.status_batch_size + 1)]

    results = make(fake).fetch_statuses(ids)

    assert len(fake.requests_for("status")) == 2
    assert len(results) == len(ids)


def test_it_covers_the_whole_status_table() -> None:
    assert STATUS_MAP == EXPECTED
    assert SmsRuCarrier.not_found_codes == {"-1"}


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_it_maps_each_raw_status_and_keeps_it(fake: FakeSmsRu, raw: str, expected: DeliveryStatus) -> None:
    carrier = make(fake)
    sms_id = carrier.send(TO, "x", reference="r").carrier_message_id
    fake.set_status(sms_id, raw)

    result = carrier.fetch_statuses([sms_id])[sms_id]

    assert (result.status, result.raw_status) == (expected, raw)


@pytest.mark.parametrize(
    ("kind", "retryable", "code"),
    [("bad_api_id", False, "200"), ("no_funds", False, "201"), ("unavailable", True, "220")],
)
def test_it_raises_request_level_errors_while_polling(
    fake: FakeSmsRu, kind: str, retryable: bool, code: str
) -> None:
    carrier = make(fake)
    sms_id = carrier.send(TO, "x", reference="r").carrier_message_id
    fake.fail_next(1, kind, "status")

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses([sms_id])

    assert (exc.value.retryable, exc.value.code) == (retryable, code)
    assert exc.value.partial_results == {}


@pytest.mark.parametrize(
    ("kind", "retryable", "code"),
    [
        ("bad_api_id", False, "200"),
        ("no_funds", False, "201"),
        ("bad_number", False, "202"),
        ("no_route", False, "207"),
        ("stop_list", False, "209"),
        ("unavailable", True, "220"),
        ("daily_limit", True, "230"),
        ("server_error", True, "500"),
    ],
)
def test_it_classifies_send_errors(fake: FakeSmsRu, kind: str, retryable: bool, code: str) -> None:
    fake.fail_next(1, kind)

    with pytest.raises(CarrierError) as exc:
        make(fake).send(TO, "x", reference="r")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert (exc.value.retryable, exc.value.code) == (retryable, code)


def test_it_treats_a_duplicate_message_rejection_as_outcome_unknown(fake: FakeSmsRu) -> None:
    fake.fail_next(1, "duplicate")

    with pytest.raises(SendOutcomeUnknown) as exc:
        make(fake).send(TO, "x", reference="r")

    assert exc.value.code == "231"


def test_it_rejects_a_wrong_api_id_permanently(fake: FakeSmsRu) -> None:
    carrier = SmsRuCarrier(credentials={"api_id": "wrong"}, sender="", base_url=fake.base_url)

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses(["000000-1"])

    assert (exc.value.retryable, exc.value.code) == (False, "200")


def test_it_answers_a_rate_limit_as_retryable(frozen_fake: FakeSmsRu) -> None:
    fake, clock = frozen_fake, frozen_fake.clock
    fake.max_concurrent = 1
    fake.response_delay = 0.8
    errors: list[CarrierError] = []

    def poll() -> None:
        try:
            make(fake).fetch_statuses(["000000-1"])
        except CarrierError as exc:
            errors.append(exc)

    first, second = (threading.Thread(target=poll) for _ in range(2))
    first.start()
    assert clock.wait_for_sleepers(1)  # the first request is in flight, its answer held by the clock
    second.start()
    second.join(10)  # refused at once: one request at a time
    clock.advance(0.8)
    first.join(10)
    assert not first.is_alive() and not second.is_alive()

    assert len(errors) == 1
    # SMS.ru says "try a bit later" without a number
    assert (errors[0].retryable, errors[0].code, errors[0].retry_after) == (True, "220", None)


def test_it_is_retryable_when_the_carrier_is_down(fake: FakeSmsRu) -> None:
    carrier = make(fake)
    fake.down = True

    with pytest.raises(CarrierError) as on_send:
        carrier.send(TO, "x", reference="r")
    with pytest.raises(CarrierError) as on_poll:
        carrier.fetch_statuses(["000000-1"])

    assert not isinstance(on_send.value, SendOutcomeUnknown)
    assert on_send.value.retryable and on_poll.value.retryable


def test_it_is_retryable_when_the_connection_is_refused(fake: FakeSmsRu) -> None:
    carrier = make(fake)
    fake.close()

    with pytest.raises(CarrierError) as exc:
        carrier.send(TO, "x", reference="r")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert exc.value.retryable


def test_it_reports_outcome_unknown_on_a_read_timeout_after_sending(frozen_fake: FakeSmsRu) -> None:
    fake = frozen_fake
    fake.response_delay = 1.0

    with pytest.raises(SendOutcomeUnknown):
        make(fake, timeout=(2.0, 0.2)).send(TO, "x", reference="r")
    fake.clock.advance(1.0)  # let the late answer go (to nobody)

    assert len(fake.messages) == 1


def test_it_reports_outcome_unknown_on_an_unreadable_answer_to_a_send(fake: FakeSmsRu) -> None:
    fake.fail_next(1, "html", "send")

    with pytest.raises(SendOutcomeUnknown):
        make(fake).send(TO, "x", reference="r")


def test_it_is_retryable_on_an_unreadable_answer_to_a_poll(fake: FakeSmsRu) -> None:
    fake.fail_next(1, "html", "status")

    with pytest.raises(CarrierError) as exc:
        make(fake).fetch_statuses(["000000-1"])

    assert exc.value.retryable


def test_it_treats_a_connect_timeout_as_retryable_even_on_send() -> None:
    # a connect timeout cannot be staged reliably on loopback: stub the HTTP boundary
    carrier = SmsRuCarrier(credentials={"api_id": "k"}, sender="", base_url="http://smsru.invalid")
    with responses.RequestsMock() as mock:
        mock.add(responses.POST, "http://smsru.invalid/sms/send", body=requests.ConnectTimeout("slow"))
        with pytest.raises(CarrierError) as exc:
            carrier.send(TO, "x", reference="r")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert exc.value.retryable


def test_it_checks_credentials() -> None:
    assert SmsRuCarrier.check_credentials({}) == ["api_id is required"]
    assert SmsRuCarrier.check_credentials({"api_id": "x"}) == []
