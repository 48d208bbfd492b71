"""SandboxCarrier (no network), plus the registry and the base behaviour every carrier shares."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from django.core.exceptions import ValidationError

from messageservice.carriers import (
    CARRIER_CHOICES,
    CARRIERS,
    Carrier,
    CarrierError,
    SendOutcomeUnknown,
    StatusResult,
    UnknownCarrier,
    carrier_class,
    get_carrier,
)
from messageservice.carriers.base import parse_retry_after
from messageservice.carriers.sandbox import SandboxCarrier
from messageservice.status import FINAL, DeliveryStatus, is_forward

S = DeliveryStatus
TO = "+79991234567"


def sandbox(**options: object) -> SandboxCarrier:
    carrier = get_carrier("sandbox", credentials={}, sender="", options=options)
    assert isinstance(carrier, SandboxCarrier)
    return carrier


def test_it_sends_without_network_and_returns_a_sandbox_id() -> None:
    result = sandbox().send(TO, "x", reference="r")

    assert result.carrier_message_id.startswith("sbx-")
    assert result.status == S.QUEUED


def test_it_reports_sent_before_the_delay_and_delivered_after_it() -> None:
    cmid = sandbox().send(TO, "x", reference="r").carrier_message_id

    early = sandbox(delivery_delay=3600).fetch_statuses([cmid])[cmid]
    late = sandbox(delivery_delay=0).fetch_statuses([cmid])[cmid]

    assert (early.status, early.raw_status) == (S.SENT, "sent")
    assert (late.status, late.raw_status) == (S.DELIVERED, "delivered")


def test_it_decides_non_delivery_at_send_time_and_keeps_it_in_the_id() -> None:
    cmid = sandbox(failure_rate=1).send(TO, "x", reference="r").carrier_message_id

    # another process, another instance: only the id carries the outcome
    result = sandbox(delivery_delay=0, failure_rate=0).fetch_statuses([cmid])[cmid]

    assert result.status == S.UNDELIVERED
    assert result.error


def test_it_rejects_numbers_ending_in_0000_permanently() -> None:
    with pytest.raises(CarrierError) as exc:
        sandbox().send("+79990000000", "x", reference="r")

    assert exc.value.retryable is False


def test_it_does_not_know_foreign_ids() -> None:
    assert sandbox().fetch_statuses(["SM123"])["SM123"].status is None


# -- registry -----------------------------------------------------------------------------------


def test_it_lists_carriers_as_model_choices() -> None:
    assert CARRIER_CHOICES == [
        ("twilio", "Twilio"),
        ("smsru", "SMS.ru"),
        ("smsc", "SMSC"),
        ("sandbox", "Sandbox (demo)"),
    ]


@pytest.mark.parametrize("kind", list(CARRIERS))
def test_it_imports_each_carrier_by_its_dotted_path(kind: str) -> None:
    cls = carrier_class(kind)

    assert issubclass(cls, Carrier)
    assert cls.kind == kind
    assert cls.status_batch_size >= 1
    assert set(cls.status_map.values()) <= set(DeliveryStatus)


def test_it_refuses_an_unknown_kind() -> None:
    with pytest.raises(UnknownCarrier):
        get_carrier("pigeon", credentials={}, sender="")


# -- options -------------------------------------------------------------------------------------------


def test_each_carrier_validates_its_own_options() -> None:
    assert SandboxCarrier.validate_options({"delivery_delay": 0, "failure_rate": 0.5, "timeout": [1, 2]}) == {
        "delivery_delay": 0, "failure_rate": 0.5, "timeout": [1, 2]}
    assert carrier_class("smsru").validate_options({"test": True, "timeout": 5}) == {"test": True, "timeout": 5}
    assert carrier_class("twilio").validate_options({}) == {}


@pytest.mark.parametrize(("kind", "options", "problem"), [
    ("sandbox", {"failure_rate": 2}, "failure_rate must be a number from 0 to 1"),
    ("sandbox", {"delivery_delay": True}, "delivery_delay must be a number from 0 to 86400"),
    ("sandbox", {"timeout": 0}, "timeout must be seconds or [connect, read]"),
    ("smsru", {"failure_rate": 0.5}, "failure_rate is not an option of SMS.ru"),
    ("smsc", {"timeout": [1]}, "timeout must be seconds or [connect, read]"),
    ("twilio", [], "must be a JSON object"),
])
def test_it_refuses_options_its_carrier_does_not_accept(kind: str, options: object, problem: str) -> None:
    with pytest.raises(ValidationError) as exc:
        carrier_class(kind).validate_options(options)
    assert problem in exc.value.messages


# -- status vocabulary ---------------------------------------------------------------------------


def test_it_only_moves_statuses_forward() -> None:
    assert is_forward(None, S.QUEUED)
    assert is_forward(S.QUEUED, S.SENT)
    assert is_forward(S.SENT, S.DELIVERED)
    assert is_forward("queued", "failed")
    assert not is_forward(S.DELIVERED, S.SENT)
    assert not is_forward(S.DELIVERED, S.FAILED)  # final states never replace each other
    assert not is_forward(S.SENT, S.SENT)
    assert not is_forward(S.SENT, None)


def test_it_marks_the_final_statuses() -> None:
    assert frozenset({S.DELIVERED, S.UNDELIVERED, S.FAILED}) == FINAL
    assert [value for value, _label in DeliveryStatus.choices] == [
        "queued",
        "sent",
        "delivered",
        "undelivered",
        "failed",
    ]


# -- base behaviour --------------------------------------------------------------------------------


class _Batched(Carrier):
    kind = "test"
    label = "Test"
    default_base_url = ""
    status_batch_size = 2
    status_map = {"ok": S.DELIVERED}

    def __init__(self, fail_on_call: int | None = None) -> None:
        super().__init__(credentials={}, sender="")
        self.calls: list[list[str]] = []
        self.fail_on_call = fail_on_call

    def _fetch_batch(self, carrier_message_ids: list[str]) -> dict[str, StatusResult]:
        self.calls.append(carrier_message_ids)
        if len(self.calls) == self.fail_on_call:
            raise CarrierError.transient("down")
        return {i: StatusResult(i, self.normalize("ok"), "ok") for i in carrier_message_ids if i != "gone"}


def test_it_splits_dedupes_and_fills_in_missing_ids() -> None:
    carrier = _Batched()

    results = carrier.fetch_statuses(["a", "b", "a", "gone", "c"])

    assert carrier.calls == [["a", "b"], ["gone", "c"]]
    assert results["gone"].status is None
    assert [results[i].status for i in "abc"] == [S.DELIVERED] * 3


def test_it_keeps_results_of_earlier_batches_on_the_error() -> None:
    with pytest.raises(CarrierError) as exc:
        _Batched(fail_on_call=2).fetch_statuses(["a", "b", "c"])

    assert set(exc.value.partial_results) == {"a", "b"}


def test_it_normalizes_unknown_raw_statuses_to_none() -> None:
    assert _Batched.normalize("weird") is None
    assert _Batched.normalize(None) is None


def test_it_says_whether_an_error_is_worth_retrying() -> None:
    assert CarrierError.transient("x", retry_after=5).retryable
    assert not CarrierError.permanent("x", code="21211").retryable
    unknown = SendOutcomeUnknown("x")
    assert isinstance(unknown, CarrierError)
    assert unknown.retryable is False


def test_it_parses_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after(formatdate(now + 60, usegmt=True), now=now) == 60.0
    assert parse_retry_after(formatdate(now - 60, usegmt=True), now=now) == 0.0  # a date in the past: now
