"""TwilioCarrier against FakeTwilio over real HTTP (the official SDK underneath)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from messageservice.carriers import CarrierError, SendOutcomeUnknown, get_carrier
from messageservice.carriers.twilio import STATUS_MAP, TwilioCarrier, _HttpClient
from messageservice.status import DeliveryStatus
from tests.fakes.carriers import FakeTwilio
from tests.fakes.clock import Clock

S = DeliveryStatus
SENDER = "+15005550006"
TO = "+79991234567"

# the carrier's published status table, written out independently of the module
EXPECTED = {
    "accepted": S.QUEUED,
    "scheduled": S.QUEUED,
    "queued": S.QUEUED,
    "sending": S.QUEUED,
    "sent": S.SENT,
    "delivered": S.DELIVERED,
    "read": S.DELIVERED,
    "partially_delivered": S.DELIVERED,
    "undelivered": S.UNDELIVERED,
    "failed": S.FAILED,
    "canceled": S.FAILED,
}


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    with FakeTwilio() as server:
        yield server


@pytest.fixture
def frozen_fake() -> Iterator[FakeTwilio]:
    """The fake on a frozen clock: a delayed answer (`response_delay`) comes only when the test advances
    `frozen_fake.clock`, so a read timeout or an overlap of two requests is certain, whatever the load."""
    with FakeTwilio(clock=Clock.manual()) as server:
        yield server


def make(fake: FakeTwilio, sender: str = SENDER, **options: object) -> TwilioCarrier:
    options.setdefault("timeout", (2.0, 5.0))
    carrier = get_carrier(
        "twilio", credentials=fake.credentials, sender=sender, base_url=fake.base_url, options=options
    )
    assert isinstance(carrier, TwilioCarrier)
    return carrier


def test_it_sends_and_returns_sid_and_status(fake: FakeTwilio) -> None:
    result = make(fake).send(TO, "Hello", reference="msg-1")

    assert result.carrier_message_id.startswith("SM")
    assert (result.status, result.raw_status) == (S.QUEUED, "queued")
    [sent] = fake.messages
    assert (sent.id, sent.to, sent.body, sent.sender) == (result.carrier_message_id, TO, "Hello", SENDER)


def test_it_sends_through_a_messaging_service_when_sender_is_a_service_sid(fake: FakeTwilio) -> None:
    service = "MG" + "a" * 32
    result = make(fake, sender=service).send(TO, "Hi", reference="r")

    assert (result.status, result.raw_status) == (S.QUEUED, "accepted")
    assert fake.messages[0].sender == service
    assert "MessagingServiceSid" in fake.requests_for("send")[0].params


def test_it_passes_the_reference_in_the_status_callback(fake: FakeTwilio) -> None:
    carrier = make(fake, status_callback="https://app.example/sms/cb?ref={reference}")
    carrier.send(TO, "Hi", reference="a b/1")

    callback = fake.messages[0].extra["status_callback"]
    assert parse_qs(urlsplit(callback).query)["ref"] == ["a b/1"]


def test_it_fetches_statuses_one_request_per_sid(fake: FakeTwilio) -> None:
    carrier = make(fake)
    sids = [carrier.send(TO, f"m{i}", reference=str(i)).carrier_message_id for i in range(3)]
    fake.deliver_all()

    results = carrier.fetch_statuses(sids)

    assert len(fake.requests_for("status")) == 3
    assert {sid: r.status for sid, r in results.items()} == dict.fromkeys(sids, S.DELIVERED)


def test_it_covers_the_whole_status_table() -> None:
    assert STATUS_MAP == EXPECTED


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_it_maps_each_raw_status_and_keeps_it(fake: FakeTwilio, raw: str, expected: DeliveryStatus) -> None:
    carrier = make(fake)
    sid = carrier.send(TO, "x", reference="r").carrier_message_id
    fake.set_status(sid, raw)

    result = carrier.fetch_statuses([sid])[sid]

    assert (result.status, result.raw_status) == (expected, raw)


def test_it_leaves_inbound_statuses_unmapped(fake: FakeTwilio) -> None:
    carrier = make(fake)
    sid = carrier.send(TO, "x", reference="r").carrier_message_id
    fake.set_status(sid, "received")

    assert carrier.fetch_statuses([sid])[sid].status is None


def test_it_keeps_the_delivery_error_of_an_undelivered_message(fake: FakeTwilio) -> None:
    carrier = make(fake)
    sid = carrier.send(TO, "x", reference="r").carrier_message_id
    fake.set_status(sid, "undelivered", error_code="30003", error_message="Unreachable destination handset")

    result = carrier.fetch_statuses([sid])[sid]

    assert result.status == S.UNDELIVERED
    assert result.error == "30003: Unreachable destination handset"


def test_it_reports_an_unknown_sid_as_unknown_not_as_an_error(fake: FakeTwilio) -> None:
    missing = "SM" + "0" * 32

    result = make(fake).fetch_statuses([missing])[missing]

    assert result.status is None
    assert "20404" in (result.error or "")


@pytest.mark.parametrize(
    ("kind", "retryable", "code"),
    [
        ("invalid_to", False, "21211"),
        ("unsubscribed", False, "21610"),
        ("region", False, "21408"),
        ("auth", False, "20003"),
        ("rate_limit", True, "20429"),
        ("unavailable", True, "20503"),
    ],
)
def test_it_classifies_send_errors(fake: FakeTwilio, kind: str, retryable: bool, code: str) -> None:
    fake.fail_next(1, kind)

    with pytest.raises(CarrierError) as exc:
        make(fake).send(TO, "x", reference="r")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert (exc.value.retryable, exc.value.code) == (retryable, code)


def test_it_rejects_an_invalid_to_number_permanently(fake: FakeTwilio) -> None:
    with pytest.raises(CarrierError) as exc:
        make(fake).send("+12", "x", reference="r")

    assert (exc.value.retryable, exc.value.code) == (False, "21211")
    assert fake.messages == []


def test_it_rejects_wrong_credentials_permanently(fake: FakeTwilio) -> None:
    carrier = TwilioCarrier(
        credentials={"account_sid": fake.account_sid, "auth_token": "0" * 32},
        sender=SENDER,
        base_url=fake.base_url,
    )
    with pytest.raises(CarrierError) as exc:
        carrier.send(TO, "x", reference="r")

    assert (exc.value.retryable, exc.value.code, exc.value.http_status) == (False, "20003", 401)


def test_it_returns_retry_after_from_a_rate_limit_answer(fake: FakeTwilio) -> None:
    fake.retry_after = 7
    fake.fail_next(1, "rate_limit")

    with pytest.raises(CarrierError) as exc:
        make(fake).send(TO, "x", reference="r")

    assert (exc.value.retryable, exc.value.retry_after, exc.value.http_status) == (True, 7.0, 429)


def test_it_rate_limits_concurrent_requests_as_retryable(frozen_fake: FakeTwilio) -> None:
    fake, clock = frozen_fake, frozen_fake.clock
    fake.max_concurrent = 1
    fake.response_delay = 0.8
    errors: list[CarrierError] = []

    def send(i: int) -> None:
        try:
            make(fake).send(TO, f"m{i}", reference=str(i))
        except CarrierError as exc:
            errors.append(exc)

    first, second = (threading.Thread(target=send, args=(i,)) for i in range(2))
    first.start()
    assert clock.wait_for_sleepers(1)  # the first request is in flight, its answer held by the clock
    second.start()
    second.join(10)  # refused at once: one request at a time
    clock.advance(0.8)
    first.join(10)
    assert not first.is_alive() and not second.is_alive()

    assert len(errors) == 1
    assert (errors[0].retryable, errors[0].code, errors[0].retry_after) == (True, "20429", 1.0)
    assert len(fake.messages) == 1


def test_it_raises_on_request_level_errors_while_polling(fake: FakeTwilio) -> None:
    carrier = make(fake)
    sid = carrier.send(TO, "x", reference="r").carrier_message_id

    fake.fail_next(1, "auth", "status")
    with pytest.raises(CarrierError) as auth:
        carrier.fetch_statuses([sid])
    fake.fail_next(1, "rate_limit", "status")
    with pytest.raises(CarrierError) as limited:
        carrier.fetch_statuses([sid])

    assert (auth.value.retryable, auth.value.code) == (False, "20003")
    assert (limited.value.retryable, limited.value.retry_after) == (True, 1.0)


def test_it_keeps_results_of_earlier_batches_when_a_later_one_fails(fake: FakeTwilio) -> None:
    carrier = make(fake)
    sids = [carrier.send(TO, f"m{i}", reference=str(i)).carrier_message_id for i in range(2)]
    fake.fail_next(1, "unavailable", "status", skip=1)

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses(sids)

    assert exc.value.retryable
    assert list(exc.value.partial_results) == [sids[0]]


def test_it_treats_a_500_on_send_as_outcome_unknown(fake: FakeTwilio) -> None:
    fake.fail_next(1, "server_error")

    with pytest.raises(SendOutcomeUnknown) as exc:
        make(fake).send(TO, "x", reference="r")

    assert exc.value.retryable is False
    assert exc.value.code == "20500"


def test_it_treats_a_500_on_status_as_retryable(fake: FakeTwilio) -> None:
    carrier = make(fake)
    sid = carrier.send(TO, "x", reference="r").carrier_message_id
    fake.fail_next(1, "server_error", "status")

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses([sid])

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert exc.value.retryable


def test_it_is_retryable_when_the_carrier_is_down(fake: FakeTwilio) -> None:
    carrier = make(fake)
    fake.down = True

    with pytest.raises(CarrierError) as on_send:
        carrier.send(TO, "x", reference="r")
    with pytest.raises(CarrierError) as on_poll:
        carrier.fetch_statuses(["SM" + "1" * 32])

    assert not isinstance(on_send.value, SendOutcomeUnknown)
    assert on_send.value.retryable and on_poll.value.retryable
    assert on_send.value.http_status == 503


def test_it_is_retryable_when_the_connection_is_refused(fake: FakeTwilio) -> None:
    carrier = make(fake)
    fake.close()

    with pytest.raises(CarrierError) as exc:
        carrier.send(TO, "x", reference="r")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert exc.value.retryable


def test_it_reports_outcome_unknown_on_a_read_timeout_after_sending(frozen_fake: FakeTwilio) -> None:
    fake = frozen_fake
    fake.response_delay = 1.0
    carrier = make(fake, timeout=(2.0, 0.2))

    with pytest.raises(SendOutcomeUnknown) as exc:
        carrier.send(TO, "x", reference="r")
    fake.clock.advance(1.0)  # let the late answer go (to nobody)

    assert exc.value.retryable is False
    assert len(fake.messages) == 1  # it did reach the carrier


def test_it_reports_outcome_unknown_when_the_connection_drops_after_sending(fake: FakeTwilio) -> None:
    carrier = make(fake)
    fake.fail_next(1, "reset", "send")

    with pytest.raises(SendOutcomeUnknown):
        carrier.send(TO, "x", reference="r")


def test_it_is_retryable_on_a_read_timeout_while_polling(frozen_fake: FakeTwilio) -> None:
    fake = frozen_fake
    carrier = make(fake, timeout=(2.0, 0.2))
    sid = make(fake).send(TO, "x", reference="r").carrier_message_id
    fake.response_delay = 1.0

    with pytest.raises(CarrierError) as exc:
        carrier.fetch_statuses([sid])
    fake.clock.advance(1.0)  # let the late answer go (to nobody)

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert exc.value.retryable


def test_it_checks_credentials() -> None:
    assert TwilioCarrier.check_credentials({}) == ["account_sid is required", "auth_token is required"]
    assert TwilioCarrier.check_credentials({"account_sid": "nope", "auth_token": "t"}) == [
        "account_sid must look like AC followed by 32 hex digits"
    ]
    assert TwilioCarrier.check_credentials({"account_sid": FakeTwilio.ACCOUNT_SID, "auth_token": "t"}) == []


def test_it_rewrites_only_scheme_and_host_of_sdk_urls() -> None:
    client = _HttpClient(base_url="http://127.0.0.1:9999", timeout=None)

    url = client._rewrite("https://api.twilio.com/2010-04-01/Accounts/AC1/Messages.json?x=1")

    assert url == "http://127.0.0.1:9999/2010-04-01/Accounts/AC1/Messages.json?x=1"
    assert (
        _HttpClient(base_url=None, timeout=None)._rewrite("https://api.twilio.com/a")
        == "https://api.twilio.com/a"
    )


def test_it_never_shows_credentials_in_repr(fake: FakeTwilio) -> None:
    assert fake.auth_token not in repr(make(fake))


def test_it_classifies_problem_details_errors_too() -> None:
    # newer Twilio APIs answer RFC 9457 bodies, which the SDK raises as another exception type;
    # the fake speaks the Messages API's legacy format, so stub the HTTP boundary
    carrier = TwilioCarrier(
        credentials={"account_sid": FakeTwilio.ACCOUNT_SID, "auth_token": "t"},
        sender=SENDER,
        base_url="http://twilio.invalid",
    )
    problem = {
        "type": "https://www.twilio.com/docs/errors/21211",
        "title": "Invalid 'To'",
        "status": 400,
        "code": 21211,
    }
    with responses.RequestsMock() as mock:
        mock.add(
            responses.POST,
            f"http://twilio.invalid/2010-04-01/Accounts/{FakeTwilio.ACCOUNT_SID}/Messages.json",
            json=problem,
            status=400,
        )
        with pytest.raises(CarrierError) as exc:
            carrier.send(TO, "x", reference="r")

    assert not isinstance(exc.value, SendOutcomeUnknown)
    assert (exc.value.retryable, exc.value.code) == (False, "21211")
