"""A carrier for development and demos: no network, no account.

Stateless across processes (a Celery worker sends, another process polls): the send time and the
decided outcome are encoded in the id, `sbx-<unix_ms>-<d|u>-<hex>`. Polling answers `sent` until
`delivery_delay` seconds have passed, then `delivered` (d) or `undelivered` (u).

Options: `delivery_delay` (seconds, default 5), `failure_rate` (0..1, default 0: the share of
messages that end `undelivered`). Numbers ending in "0000" are rejected at send (permanent error),
to demo the failure path.
"""

from __future__ import annotations

import random
import re
import secrets
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from ..status import DeliveryStatus
from .base import Carrier, CarrierError, CredentialField, SendResult, StatusResult

S = DeliveryStatus

STATUS_MAP: dict[str, DeliveryStatus] = {status.value: status for status in DeliveryStatus}

_ID = re.compile(r"^sbx-(?P<ms>\d{1,16})-(?P<outcome>[du])-[0-9a-f]+$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class SandboxCarrier(Carrier):
    kind: ClassVar[str] = "sandbox"
    label: ClassVar[str] = "Sandbox"
    default_base_url: ClassVar[str] = ""
    status_batch_size: ClassVar[int] = 1000
    status_map: ClassVar[dict[str, DeliveryStatus]] = STATUS_MAP
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()  # nothing to configure
    option_names: ClassVar[frozenset[str]] = frozenset({"delivery_delay", "failure_rate"})
    #: option -> the range it must lie in
    option_ranges: ClassVar[dict[str, tuple[float, float]]] = {"delivery_delay": (0.0, 86400.0),
                                                              "failure_rate": (0.0, 1.0)}

    def __init__(
        self,
        *,
        credentials: Mapping[str, Any] | None = None,
        sender: str = "",
        base_url: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(credentials=credentials or {}, sender=sender, base_url=base_url, options=options)
        self.delivery_delay = max(0.0, float(self.options.get("delivery_delay", 5)))
        self.failure_rate = min(1.0, max(0.0, float(self.options.get("failure_rate", 0))))

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[str]:
        problems: list[str] = []
        for key, (low, high) in cls.option_ranges.items():
            if key in options:
                value = options[key]
                if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
                    problems.append(f"{key} must be a number from {low:g} to {high:g}")
        return problems + super().option_problems(options)

    def send(self, to: str, body: str, *, reference: str) -> SendResult:
        if not _E164.match(to or ""):
            raise CarrierError.permanent(f"{self.label}: {to!r} is not an E.164 number", code="invalid-to")
        if to.endswith("0000"):
            raise CarrierError.permanent(
                f"{self.label}: numbers ending in 0000 are rejected (demo of a failed send)",
                code="rejected",
            )
        outcome = "u" if random.random() < self.failure_rate else "d"
        cmid = f"sbx-{_now_ms()}-{outcome}-{secrets.token_hex(6)}"
        return SendResult(cmid, S.QUEUED, S.QUEUED.value)

    def _fetch_batch(self, carrier_message_ids: list[str]) -> dict[str, StatusResult]:
        now = _now_ms()
        results: dict[str, StatusResult] = {}
        for cmid in carrier_message_ids:
            match = _ID.match(cmid)
            if match is None:
                results[cmid] = StatusResult(cmid, None, "", error="not a sandbox message id")
                continue
            if now - int(match["ms"]) < self.delivery_delay * 1000:
                raw = S.SENT.value
            elif match["outcome"] == "d":
                raw = S.DELIVERED.value
            else:
                raw = S.UNDELIVERED.value
            error = "sandbox: simulated non-delivery" if raw == S.UNDELIVERED.value else None
            results[cmid] = StatusResult(cmid, self.normalize(raw), raw, error=error)
        return results
