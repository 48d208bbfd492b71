"""SmscCarrier against FakeSmsc over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from messageservice.carriers import CarrierError, SendOutcomeUnknown, get_carrier
from messageservice.carriers.smsc import STATUS_MAP, SmscCarrier, client_message_id
from messageservice.status import DeliveryStatus
from tests.fakes.carriers import FakeSmsc
from tests.fakes.clock import Clock

S = DeliveryStatus
TO = "+79991234567"

# the carrier's published status table, written out independently of the module
EXPECTED = {
    "-3": S.FAILED,
    "-2": S.FAILED,
    "-1": S.QUEUED,
    "0": S.SENT,
    "1": S.DELIVERED,
    "2": S.DELIVERED,
    "3": S.UNDELIVERED,
    "4": S.DELIVERED,
    "20": S.UNDELIVERED,
    "22": S.FAILED,
    "23": S.FAILED,
    "24": S.FAILED,
    "25": S.UNDELIVERED,
}


@pytest.fixture
def fake() -> Iterator[FakeSmsc]:
    with FakeSmsc() as server:
        yield server


@pytest.fixture
def frozen_fake() -> Iterator[FakeSmsc]:
    """The fake on a frozen clock: a delayed answer (`response_delay`) comes only when the test advances
    `frozen_fake.clock`, so a read timeout or an overlap of two requests is certain, whatever the load."""
    with FakeSmsc(clock=Clock.manual()) as server:
        yield server


def make(fake: FakeSmsc, sender: str = "MyShop", **options: object) -> SmscCarrier:
    options.setdefault("timeout", (2.0, 5.0))
    carrier = get_carrier(
        "smsc", credentials=fake.credentials, sender=sender, base_url=fake.base_url, options=options
    )
    assert isinstance(carrier, SmscCarrier)
    return carrier


def test_it_sends_and_returns_id_status_and_cost(fake: FakeSmsc) -> None:
    result = make(fake).send(TO, "Привет", reference="42")

    assert result.carrier_message_id == "42:79991234567"
    assert (result.status, result.raw_status, result.cost) == (S.QUEUED, "accepted", "1.50")
    [sent] = fake.messages
    assert (sent.id, sent.to, sent.body, sent.sender) == ("42", "79991234567", "Привет", "MyShop")
    params = fake.requests_for("send")[0].params
    assert (params["phones"], params["fmt"], params["charset"]) == (TO, "3", "utf-8")


def test_it_derives_a_stable_numeric_id_from_any_reference() -> None:
    first = client_message_id("5f0c2b8e9d1a4c6b8e7f0a1b2c3d4e5f")

    assert first == client_message_id("5f0c2b8e9d1a4c6b8e7f0a1b2c3d4e5f")
    assert 1 <= first <= 2**31 - 1
    assert client_message_id("17") == 17
    assert client_message_id("99999999999") != 99999999999


def test_it_fetches_many_statuses_in_one_request_in_the_multi_format(fake: FakeSmsc) -> None:
    carrier = make(fake)
    ids = [carrier.send(TO, f"m{i}", reference=str(i + 1)).carrier_message_id for i in range(3)]
    fake.set_status(ids[0], 1)
    fake.set_status(ids[1], 20, error_code="1")

    results = carrier.fetch_statuses(ids)

    [poll] = fake.requests_for("status")
    assert (poll.params["id"], poll.params["phone"]) == ("1,2,3,", "79991234567," * 3)
    assert [results[i].status for i in ids] == [S.DELIVERED, S.UNDELIVERED, S.QUEUED]
    assert results[ids[1]].error == "1"


def test_it_uses_the_multi_format_for_a_single_message_too(fake: FakeSmsc) -> None:
    carrier = make(fake)
    cmid = carrier.send(TO, "x", reference="7").carrier_message_id

    result = carrier.fetch_statuses([cmid])[cmid]

    assert fake.requests_for("status")[0].params["id"] == "7,"
    assert (result.status, result.raw_status) == (S.QUEUED, "-1")


def test_it_matches_answers_by_id_and_phone(fake: FakeSmsc) -> None:
    carrier = make(fake)
    a = carrier.send(TO, "x", reference="5").carrier_message_id
    b = carrier.send("+79990000001", "x", reference="5").carrier_message_id
    fake.set_status(b, 3)

    results = carrier.fetch_statuses([a, b])

    assert (results[a].status, results[b].status) == (S.QUEUED, S.UNDELIVERED)


def test_it_covers_the_whole_status_table() -> None:
    assert STATUS_MAP == EXPECTED
    assert SmscCarrier.not_found_codes == {"-3"}


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_it_maps_each_raw_status_and_keeps_it(fake: FakeSmsc, raw: str, expected: DeliveryStatus) -> None:
    carrier = make(fake)
    cmid = carrier.send(TO, "x", reference="9").carrier_message_id
    fake.set_status(cmid, raw)

    result = carrier.fetch_statuses([cmid])[cmid]

    assert (result.status, result.raw_status) == (expected, raw)


def test_it_reports_an_unknown_message_as_not_found(fake: FakeSmsc) -> None:
    result = make(fake).fetch_statuses(["123:79991234567"])["123:79991234567"]

    assert (result.status, result.raw_status) == (S.FAILED, "-3")


@pytest.mark.parametrize(
    ("kind", "retryable", "code", "retry_after"),
    [
        ("auth", False, "2", None),
        ("params", False, "1", None),
        ("ip_blocked", True, "4", 600),
        ("too_frequent", True, "9", 60),
    ],
)
def test_it_raises_request_level_errors_while_polling(
    fake: FakeSmsc, kind: str, retryable: bool, code: str, retry_after: float | None
) -> None:
    carrier = make(fake)
    cmid = carrier.send(TO, "x", reference="1").carrier_message_id
    fake.fail_next(1, kind, "status")

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses([cmid])

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert (exc.value.retryable, exc.value.code, exc.value.retry_after) == (retryable, code, retry_after)


@pytest.mark.parametrize(
    ("kind", "retryable", "code"),
    [
        ("auth", False, "2"),
        ("no_funds", False, "3"),
        ("ip_blocked", True, "4"),
        ("forbidden", False, "6"),
        ("bad_phone", False, "7"),
        ("undeliverable", False, "8"),
    ],
)
def test_it_classifies_send_errors(fake: FakeSmsc, kind: str, retryable: bool, code: str) -> None:
    fake.fail_next(1, kind)

    with pytest.raises(CarrierError) as exc:
        make(fake).send(TO, "x", reference="1")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert (exc.value.retryable, exc.value.code) == (retryable, code)


def test_it_rejects_wrong_credentials_permanently(fake: FakeSmsc) -> None:
    carrier = SmscCarrier(
        credentials={"login": "demo", "password": "nope"}, sender="", base_url=fake.base_url
    )

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses(["1:79991234567"])

    assert (exc.value.retryable, exc.value.code) == (False, "2")


def test_it_authenticates_with_an_apikey() -> None:
    with FakeSmsc(apikey="k-1") as fake:
        carrier = SmscCarrier(credentials={"apikey": "k-1"}, sender="", base_url=fake.base_url)
        carrier.send(TO, "x", reference="1")

        params = fake.requests_for("send")[0].params
    assert params["apikey"] == "k-1"
    assert "login" not in params


def test_it_refuses_a_repeated_send_as_outcome_unknown_with_a_pollable_id(fake: FakeSmsc) -> None:
    carrier = make(fake)
    first = carrier.send(TO, "x", reference="77")

    with pytest.raises(SendOutcomeUnknown) as exc:
        carrier.send(TO, "x", reference="77")

    assert (exc.value.code, exc.value.retry_after) == ("9", 60)
    assert exc.value.carrier_message_id == first.carrier_message_id
    assert len(fake.messages) == 1
    assert carrier.fetch_statuses([first.carrier_message_id])[first.carrier_message_id].raw_status == "-1"


def test_it_reports_outcome_unknown_on_a_read_timeout_and_the_id_can_be_polled(frozen_fake: FakeSmsc) -> None:
    fake = frozen_fake
    fake.response_delay = 1.0

    with pytest.raises(SendOutcomeUnknown) as exc:
        make(fake, timeout=(2.0, 0.2)).send(TO, "x", reference="55")

    fake.response_delay = 0
    fake.clock.advance(1.0)  # let the late answer go (to nobody)
    cmid = exc.value.carrier_message_id
    assert cmid == "55:79991234567"
    assert make(fake).fetch_statuses([cmid])[cmid].raw_status == "-1"  # it did arrive


def test_it_reports_outcome_unknown_when_the_connection_drops_after_sending(fake: FakeSmsc) -> None:
    fake.down = "reset"

    with pytest.raises(SendOutcomeUnknown):
        make(fake).send(TO, "x", reference="1")


def test_it_is_retryable_when_the_connection_drops_while_polling(fake: FakeSmsc) -> None:
    fake.down = "reset"

    with pytest.raises(CarrierError) as exc:
        make(fake).fetch_statuses(["1:79991234567"])

    assert exc.value.retryable


def test_it_is_retryable_when_the_carrier_is_down(fake: FakeSmsc) -> None:
    carrier = make(fake)
    fake.down = True

    with pytest.raises(CarrierError) as on_send:
        carrier.send(TO, "x", reference="1")
    with pytest.raises(CarrierError) as on_poll:
        carrier.fetch_statuses(["1:79991234567"])

    assert not isinstance(on_send.value, SendOutcomeUnknown)
    assert on_send.value.retryable and on_poll.value.retryable


def test_it_is_retryable_when_the_connection_is_refused(fake: FakeSmsc) -> None:
    carrier = make(fake)
    fake.close()

    with pytest.raises(CarrierError) as exc:
        carrier.send(TO, "x", reference="1")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert exc.value.retryable


def test_it_checks_credentials() -> None:
    assert SmscCarrier.check_credentials({}) == ["login and password required (or an apikey)"]
    assert SmscCarrier.check_credentials({"login": "a"}) == ["password required (or an apikey)"]
    assert SmscCarrier.check_credentials({"login": "a", "password": "b"}) == []
    assert SmscCarrier.check_credentials({"apikey": "k"}) == []
