"""PHP-style nested query strings, as Bitrix24 (a PHP application) reads and writes them.

``a[b][0]=1&c=2`` decodes to ``{"a": {"b": {"0": "1"}}, "c": "2"}`` (PHP ``parse_str``), and
:func:`build_php_query` encodes the other way with ``http_build_query`` semantics: nested mappings and
sequences become bracket keys, lists use numeric keys, ``True``/``False`` become ``1``/``0`` and ``None``
is left out. These helpers serve the fake Bitrix24 cloud only; the product has its own encoder.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, quote_plus

__all__ = [
    "build_php_query",
    "flatten_php",
    "listify",
    "parse_php_pairs",
    "parse_php_query",
    "split_php_key",
]

_BRACKET_RE = re.compile(r"\[([^\]]*)\]")


def split_php_key(key: str) -> list[str]:
    """Split ``a[b][]`` into ``["a", "b", ""]``; an empty segment means "append" (``a[]``).

    Like PHP, anything after the last well-formed ``[...]`` group is ignored, and a key without brackets
    (or one starting with ``[``) is taken literally.
    """
    first = key.find("[")
    if first <= 0:
        return [key]
    parts = [key[:first]]
    pos = first
    while pos < len(key):
        match = _BRACKET_RE.match(key, pos)
        if match is None:
            break
        parts.append(match.group(1))
        pos = match.end()
    if len(parts) == 1:  # "a[b" has no closing bracket: a literal key
        return [key]
    return parts


def _next_index(node: Mapping[str, Any]) -> int:
    """PHP's next free integer key of an array: one past the largest integer key, or 0."""
    numeric = [int(k) for k in node if k.lstrip("-").isdigit()]
    return max(numeric) + 1 if numeric else 0


def _assign(root: dict[str, Any], parts: list[str], value: Any) -> None:
    node = root
    for i, part in enumerate(parts):
        key = str(_next_index(node)) if part == "" else part
        if i == len(parts) - 1:
            node[key] = value  # later duplicates win, as in PHP
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def parse_php_pairs(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Build the nested structure PHP would make from already-decoded ``(key, value)`` pairs.

    Values are stored as given, so a caller may put a structure (not only a string) under a key.
    """
    root: dict[str, Any] = {}
    for key, value in pairs:
        _assign(root, split_php_key(key), value)
    return root


def parse_php_query(query: str | bytes) -> dict[str, Any]:
    """Decode ``a[b][0]=1&c=2`` into ``{"a": {"b": {"0": "1"}}, "c": "2"}`` (blank values kept)."""
    if isinstance(query, bytes):
        query = query.decode("utf-8", "replace")
    return parse_php_pairs(parse_qsl(query, keep_blank_values=True))


def _scalar(value: Any) -> str:
    if value is True:
        return "1"
    if value is False:
        return "0"
    return str(value)


def flatten_php(data: Mapping[str, Any] | Iterable[Any], prefix: str = "") -> list[tuple[str, str]]:
    """Flatten nested data into unencoded bracket pairs: ``{"a": {"b": [1]}}`` → ``[("a[b][0]", "1")]``.

    ``None`` values and empty containers produce nothing (as ``http_build_query`` does).
    """
    items: Iterable[tuple[Any, Any]]
    items = data.items() if isinstance(data, Mapping) else enumerate(data)
    pairs: list[tuple[str, str]] = []
    for key, value in items:
        name = f"{prefix}[{key}]" if prefix else str(key)
        if value is None:
            continue
        if isinstance(value, Mapping | list | tuple):
            pairs.extend(flatten_php(value, name))
        else:
            pairs.append((name, _scalar(value)))
    return pairs


def build_php_query(data: Mapping[str, Any], *, encode_brackets: bool = True) -> str:
    """Encode like PHP ``http_build_query``: ``{"a": {"b": [1, 2]}}`` → ``a%5Bb%5D%5B0%5D=1&a%5Bb%5D%5B1%5D=2``.

    Spaces become ``+``. With ``encode_brackets=False`` the brackets stay literal (easier to read in tests).
    """
    safe = "" if encode_brackets else "[]"
    return "&".join(f"{quote_plus(k, safe=safe)}={quote_plus(v)}" for k, v in flatten_php(data))


def listify(value: Any) -> Any:
    """Recursively turn dicts keyed exactly ``"0".."n-1"`` (a decoded PHP list) into Python lists."""
    if isinstance(value, list):
        return [listify(v) for v in value]
    if not isinstance(value, dict):
        return value
    converted = {k: listify(v) for k, v in value.items()}
    if converted and list(converted) == [str(i) for i in range(len(converted))]:
        return list(converted.values())
    return converted
