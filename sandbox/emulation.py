"""The one door from the sandbox to the Bitrix24 emulation the tests verify (tests/fakes).

The sandbox never imports tests.fakes anywhere else, so moving that package is a one-line change here.
"""

from __future__ import annotations

from tests.fakes import b24_crm, b24_messageservice, b24_placements
from tests.fakes.bitrix24 import FakeBitrix24Cloud, FakePortal, HttpAnswer, build_php_query
from tests.fakes.carriers import RESET, FakeSmsRu, Reply

__all__ = [
    "RESET",
    "FakeBitrix24Cloud",
    "FakePortal",
    "FakeSmsRu",
    "HttpAnswer",
    "Reply",
    "b24_crm",
    "b24_messageservice",
    "b24_placements",
    "build_php_query",
]
