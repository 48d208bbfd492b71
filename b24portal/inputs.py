"""Parsing of untrusted values with limits: JSON of bounded size and depth, integers in a range.

Both raise `InputRejected` (a ValueError) with a reason a view can answer with; nothing here can raise
RecursionError, OverflowError or MemoryError on hostile input. Defaults come from settings
(INPUT_JSON_MAX_DEPTH, INPUT_JSON_MAX_BYTES).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings

# A JSON string (possibly unterminated: json.loads reports that) or a bracket outside any string.
_TOKEN_RE = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.DOTALL)
# Far below the interpreter's recursion limit, which json.loads and every later walk of the value use.
HARD_MAX_DEPTH = 200
_INT_RE = re.compile(r"(?P<sign>[+-]?)0*(?P<digits>[0-9]+)")


class InputRejected(ValueError):
    """A value from outside that we refuse; `reason` says why (safe to show the caller)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class JsonTooLarge(InputRejected):
    pass


class JsonTooDeep(InputRejected):
    pass


class InvalidJson(InputRejected):
    pass


class NotAnInteger(InputRejected):
    pass


class OutOfRange(InputRejected):
    pass


def _utf8_size(text: str, limit: int) -> int:
    """The UTF-8 size of text, or any number above limit once that is certain (without encoding it all)."""
    if len(text) > limit:
        return len(text)
    return len(text.encode("utf-8", "surrogatepass"))


def json_depth_exceeds(text: str, max_depth: int) -> bool:
    """True if brackets outside strings nest deeper than max_depth (a linear scan, no recursion)."""
    depth = 0
    for match in _TOKEN_RE.finditer(text):
        char = match.group()[0]
        if char in "[{":
            depth += 1
            if depth > max_depth:
                return True
        elif char in "]}":
            depth -= 1
    return False


def _reject_constant(name: str) -> Any:
    raise InvalidJson(f"invalid JSON: {name} is not a JSON number")


def parse_json_limited(text: str | bytes, *, max_depth: int | None = None, max_bytes: int | None = None,
                       what: str = "JSON") -> Any:
    """json.loads for text from outside: refuses (InputRejected) a body over max_bytes, nesting deeper
    than max_depth (checked before parsing, so json never recurses deeper), and anything not valid JSON
    (NaN/Infinity, integers beyond Python's digit limit included)."""
    max_depth = settings.INPUT_JSON_MAX_DEPTH if max_depth is None else max_depth
    max_bytes = settings.INPUT_JSON_MAX_BYTES if max_bytes is None else max_bytes
    if not 0 <= max_depth <= HARD_MAX_DEPTH:
        raise ValueError(f"max_depth must be between 0 and {HARD_MAX_DEPTH}, not {max_depth}")
    if isinstance(text, bytes | bytearray):
        if len(text) > max_bytes:
            raise JsonTooLarge(f"{what} too large (limit {max_bytes} bytes)")
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJson(f"invalid {what}: not UTF-8") from None
    elif _utf8_size(text, max_bytes) > max_bytes:
        raise JsonTooLarge(f"{what} too large (limit {max_bytes} bytes)")
    if json_depth_exceeds(text, max_depth):
        raise JsonTooDeep(f"{what} nested too deeply (limit {max_depth} levels)")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except InputRejected:
        raise
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, too many integer digits
        raise InvalidJson(f"invalid {what}: {str(exc).splitlines()[0][:200]}") from None


def bounded_int(value: Any, *, lo: int, hi: int, name: str = "value") -> int:
    """An integer lo <= n <= hi from an int, an integral float or a decimal string (ASCII digits, optional
    sign, surrounding blanks); anything else raises NotAnInteger, a number outside raises OutOfRange."""
    if lo > hi:
        raise ValueError(f"empty range {lo}..{hi}")
    number: int
    if isinstance(value, bool):
        raise NotAnInteger(f"{name} must be an integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not value.is_integer():  # also NaN and ±inf
            raise NotAnInteger(f"{name} must be an integer")
        if not lo <= value <= hi:
            raise OutOfRange(f"{name} must be between {lo} and {hi}")
        number = int(value)
    elif isinstance(value, str | bytes):
        text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
        text = text.strip(" \t\r\n")
        match = _INT_RE.fullmatch(text)
        if not match:
            raise NotAnInteger(f"{name} must be an integer")
        digits = match.group("digits")
        if len(digits) > len(str(max(abs(lo), abs(hi)))):  # decided without converting a huge number
            raise OutOfRange(f"{name} must be between {lo} and {hi}")
        number = int(match.group("sign") + digits)
    else:
        raise NotAnInteger(f"{name} must be an integer")
    if not lo <= number <= hi:
        raise OutOfRange(f"{name} must be between {lo} and {hi}")
    return number
