"""Untrusted JSON and numbers: limits refused with a reason (a ValueError), never a RecursionError,
OverflowError or another 500-making exception."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from b24portal.inputs import (
    HARD_MAX_DEPTH,
    InputRejected,
    InvalidJson,
    JsonTooDeep,
    JsonTooLarge,
    NotAnInteger,
    OutOfRange,
    bounded_int,
    json_depth_exceeds,
    parse_json_limited,
)

DEEP = 100_000
BIG = 10 * DEEP + 16  # room for the deep texts below, so that depth (not size) is what refuses them


def depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value: a scalar 0, [] or {} 1."""
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=40,
)


# --- parse_json_limited --------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "[" * DEEP + "]" * DEEP,
    "[" * DEEP,  # unterminated
    '{"a":' * DEEP + "1" + "}" * DEEP,
    "[{" * (DEEP // 2) + "}]" * (DEEP // 2),
    '["x", ' * DEEP + "0" + "]" * DEEP,
])
def test_100000_deep_nesting_is_refused_before_json_recurses(text):
    with pytest.raises(JsonTooDeep) as refused:
        parse_json_limited(text, max_depth=32, max_bytes=BIG)
    assert refused.value.reason == "JSON nested too deeply (limit 32 levels)"
    assert isinstance(refused.value, ValueError)


def test_100000_deep_nesting_with_the_default_limits_is_refused_too(settings):
    text = "[" * DEEP + "]" * DEEP
    with pytest.raises(JsonTooLarge, match="limit 65536 bytes"):
        parse_json_limited(text)
    settings.INPUT_JSON_MAX_BYTES = BIG
    with pytest.raises(JsonTooDeep, match=f"limit {settings.INPUT_JSON_MAX_DEPTH} levels"):
        parse_json_limited(text)


def test_the_limits_come_from_settings(settings):
    settings.INPUT_JSON_MAX_DEPTH = 2
    settings.INPUT_JSON_MAX_BYTES = 10
    assert parse_json_limited("[[1]]") == [[1]]
    with pytest.raises(JsonTooDeep):
        parse_json_limited("[[[1]]]")
    with pytest.raises(JsonTooLarge):
        parse_json_limited('"12345678901"')
    assert parse_json_limited('"ж"' * 1) == "ж"
    with pytest.raises(JsonTooLarge):  # bytes, not characters: 5 x 2 bytes + quotes
        parse_json_limited('"жжжжж"')


def test_depth_is_exact_at_the_limit():
    assert parse_json_limited("[" * 32 + "]" * 32, max_depth=32) == json.loads("[" * 32 + "]" * 32)
    with pytest.raises(JsonTooDeep):
        parse_json_limited("[" * 33 + "]" * 33, max_depth=32)
    assert parse_json_limited("7", max_depth=0) == 7
    with pytest.raises(JsonTooDeep):
        parse_json_limited("[]", max_depth=0)


@pytest.mark.parametrize("text", [
    json.dumps("[" * DEEP),
    json.dumps({"k": "{[" * 1000, "x\\\"[[[": ["\\[" * 1000]}),
    '"\\\\"',
])
def test_brackets_inside_strings_do_not_count(text):
    assert parse_json_limited(text, max_depth=2, max_bytes=BIG) == json.loads(text)


@pytest.mark.parametrize(("text", "error"), [
    ("", InvalidJson), ("{", InvalidJson), ("[1,]", InvalidJson), ('"unterminated', InvalidJson),
    ("NaN", InvalidJson), ("[Infinity]", InvalidJson), ("-Infinity", InvalidJson),
    ("1" * 5000, InvalidJson),  # beyond Python's int digit limit: a ValueError that is not a JSONDecodeError
    (b"\xff\xfe[]", InvalidJson), ("]]]]", InvalidJson),
])
def test_invalid_json_is_refused_with_a_reason(text, error):
    with pytest.raises(error) as refused:
        parse_json_limited(text, max_bytes=10_000)
    assert refused.value.reason.startswith("invalid JSON")


def test_bytes_are_utf8_and_size_checked():
    assert parse_json_limited('{"a": "ж"}'.encode()) == {"a": "ж"}
    with pytest.raises(JsonTooLarge):
        parse_json_limited(b"[" + b"1," * 10 + b"1]", max_bytes=8)


def test_the_reason_names_what_was_parsed():
    with pytest.raises(JsonTooDeep, match=r"^PLACEMENT_OPTIONS nested too deeply"):
        parse_json_limited("[[[[]]]]", max_depth=2, what="PLACEMENT_OPTIONS")


def test_a_depth_limit_json_cannot_honour_is_a_programming_error():
    with pytest.raises(ValueError, match="max_depth") as error:
        parse_json_limited("[]", max_depth=HARD_MAX_DEPTH + 1)
    assert not isinstance(error.value, InputRejected)


@given(value=json_values)
def test_valid_json_within_the_limits_round_trips(value):
    text = json.dumps(value)
    assert parse_json_limited(text, max_depth=depth(value), max_bytes=len(text.encode()) + 1) == value


@given(value=json_values, limit=st.integers(min_value=0, max_value=6))
def test_depth_is_refused_exactly_above_the_limit(value, limit):
    text = json.dumps(value, ensure_ascii=False)
    if depth(value) > limit:
        with pytest.raises(JsonTooDeep):
            parse_json_limited(text, max_depth=limit, max_bytes=BIG)
    else:
        assert parse_json_limited(text, max_depth=limit, max_bytes=BIG) == value


@given(levels=st.integers(min_value=33, max_value=DEEP), opener=st.sampled_from(["[", '{"k":', '[{"a":[']),
       closed=st.booleans())
def test_any_deep_nesting_is_refused(levels, opener, closed):
    closer = {"[": "]", '{"k":': "}", '[{"a":[': "]}]"}[opener]
    text = opener * levels + ("1" + closer * levels if closed else "")
    with pytest.raises(JsonTooDeep):
        parse_json_limited(text, max_depth=32, max_bytes=len(text.encode()))


@given(text=st.text(alphabet=st.sampled_from('[]{}",:\\ 0x') | st.characters(), max_size=300))
def test_any_text_parses_or_is_refused_with_a_reason(text):
    try:
        value = parse_json_limited(text, max_depth=4, max_bytes=10_000)
    except InputRejected as refused:
        assert refused.reason
    else:
        assert depth(value) <= 4


@given(text=st.text(alphabet=st.sampled_from('[]{}"\\a'), max_size=200))
def test_the_depth_scan_agrees_with_json_on_what_it_parses(text):
    try:
        value = json.loads(text)
    except ValueError:
        return
    assert json_depth_exceeds(text, depth(value)) is False
    assert depth(value) == 0 or json_depth_exceeds(text, depth(value) - 1) is True


# --- bounded_int ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "expected"), [
    (3600, 3600), ("3600", 3600), (" 3600\n", 3600), ("+5", 5), ("-0", 0), ("0007", 7), (12.0, 12),
    (b"42", 42), (0, 0), (86400, 86400),
])
def test_integers_in_range_are_returned(value, expected):
    assert bounded_int(value, lo=0, hi=86400) == expected


@pytest.mark.parametrize("value", [
    "1e17", "1.5", "", " ", "0x10", "١٢", "3 600", "++1", None, True, [], {}, 1.5, math.nan, math.inf, "nan",
])
def test_non_integers_are_refused(value):
    with pytest.raises(NotAnInteger, match=r"^AUTH_EXPIRES must be an integer$"):
        bounded_int(value, lo=0, hi=86400, name="AUTH_EXPIRES")


@pytest.mark.parametrize("value", [-1, 86401, "100000000000000000", 1e17, "9" * 100_000, -(10**400)])
def test_out_of_range_integers_are_refused(value):
    with pytest.raises(OutOfRange, match=r"^AUTH_EXPIRES must be between 0 and 86400$") as refused:
        bounded_int(value, lo=0, hi=86400, name="AUTH_EXPIRES")
    assert isinstance(refused.value, ValueError)


def test_an_empty_range_is_a_programming_error():
    with pytest.raises(ValueError, match="empty range") as error:
        bounded_int(1, lo=2, hi=1)
    assert not isinstance(error.value, InputRejected)


@given(number=st.integers(), lo=st.integers(-(10**6), 10**6), width=st.integers(0, 10**6),
       as_text=st.booleans())
def test_bounded_int_accepts_exactly_the_range(number, lo, width, as_text):
    hi = lo + width
    value = str(number) if as_text else number
    if lo <= number <= hi:
        assert bounded_int(value, lo=lo, hi=hi) == number
    else:
        with pytest.raises(OutOfRange):
            bounded_int(value, lo=lo, hi=hi)


@given(value=st.text(max_size=50) | st.floats() | st.binary(max_size=20))
def test_bounded_int_never_raises_anything_else(value):
    try:
        number = bounded_int(value, lo=-5, hi=10**9)
    except InputRejected as refused:
        assert refused.reason
    else:
        assert -5 <= number <= 10**9
