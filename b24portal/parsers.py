"""The DRF request parser of every API view: JSON within the size and depth limits of `b24portal.inputs`
(INPUT_JSON_MAX_BYTES, INPUT_JSON_MAX_DEPTH). A body over a limit or not valid JSON is a DRF ParseError with
the reason (a 400), never a RecursionError or a body read whole into memory."""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import BaseParser

from .inputs import InputRejected, parse_json_limited


class LimitedJSONParser(BaseParser):
    media_type = "application/json"

    def parse(self, stream: IO[Any], media_type: str | None = None,
              parser_context: Mapping[str, Any] | None = None) -> Any:
        limit = int(settings.INPUT_JSON_MAX_BYTES)
        body = stream.read(limit + 1)  # one byte more than allowed tells a body over the limit
        if isinstance(body, str):
            body = body.encode("utf-8", "surrogatepass")
        try:
            return parse_json_limited(bytes(body), what="JSON body")
        except InputRejected as exc:
            raise ParseError(exc.reason) from None
