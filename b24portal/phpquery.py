"""PHP-style nested query strings, the way Bitrix24 encodes and decodes them.

`build_query({"filter": {">ID": 5}, "select": ["ID", "NAME"]})` →
`filter%5B%3EID%5D=5&select%5B0%5D=ID&select%5B1%5D=NAME` (http_build_query semantics), and
`parse_nested([("auth[member_id]", "x"), ("data[CLEAN]", "1")])` → `{"auth": {"member_id": "x"}, ...}`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")

MAX_DEPTH = 8


class NestedKeyError(ValueError):
    """A form key that cannot be a PHP nested key, or two keys that contradict each other."""


def _flatten(prefix: str, value: Any) -> Iterable[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(f"{prefix}[{key}]" if prefix else str(key), item)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            yield from _flatten(f"{prefix}[{index}]", item)
    elif value is None:
        yield prefix, ""
    elif isinstance(value, bool):
        yield prefix, "1" if value else "0"
    else:
        yield prefix, str(value)


def flatten(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    return list(_flatten("", params))


def build_query(params: Mapping[str, Any]) -> str:
    return "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in flatten(params))


def parse_nested(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Form pairs → nested dicts. Raises NestedKeyError for malformed or conflicting keys."""
    result: dict[str, Any] = {}
    for raw_key, value in pairs:
        match = _KEY_RE.match(raw_key)
        if not match:
            raise NestedKeyError(f"malformed key {raw_key[:60]!r}")
        path = [match.group(1), *_PART_RE.findall(match.group(2))]
        if len(path) > MAX_DEPTH:
            raise NestedKeyError(f"key nested too deeply: {raw_key[:60]!r}")
        node = result
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if part == "":  # "a[]": PHP appends
                part = str(sum(1 for _ in node))
            if last:
                if isinstance(node.get(part), dict):
                    raise NestedKeyError(f"key {raw_key[:60]!r} conflicts with a nested key")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise NestedKeyError(f"key {raw_key[:60]!r} conflicts with a plain value")
                node = child
    return result


def as_list(value: Any) -> list[Any]:
    """A PHP array decoded as {"0": a, "1": b} → [a, b] (in index order); a list stays a list."""
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    raise NestedKeyError("expected a list")
