"""SMS carriers behind one small interface (see `base`), plus the registry.

`CARRIERS` maps a kind (stored on the model) to a label and the dotted path of its class; it also
feeds `CARRIER_CHOICES` for a model field. Classes are imported lazily, so the Twilio SDK is only
loaded when a Twilio carrier is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import import_module
from typing import Any

from .base import (
    Carrier,
    CarrierError,
    CredentialField,
    SendOutcomeUnknown,
    SendResult,
    StatusResult,
)

CARRIERS: dict[str, tuple[str, str]] = {
    "twilio": ("Twilio", "messageservice.carriers.twilio.TwilioCarrier"),
    "smsru": ("SMS.ru", "messageservice.carriers.smsru.SmsRuCarrier"),
    "smsc": ("SMSC", "messageservice.carriers.smsc.SmscCarrier"),
    "sandbox": ("Sandbox (demo)", "messageservice.carriers.sandbox.SandboxCarrier"),
}

CARRIER_CHOICES: list[tuple[str, str]] = [(kind, label) for kind, (label, _path) in CARRIERS.items()]


class UnknownCarrier(ValueError):
    pass


@cache
def carrier_class(kind: str) -> type[Carrier]:
    try:
        _label, path = CARRIERS[kind]
    except KeyError:
        raise UnknownCarrier(f"unknown carrier kind {kind!r}; known: {', '.join(CARRIERS)}") from None
    module_name, _, class_name = path.rpartition(".")
    cls = getattr(import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Carrier)):
        raise TypeError(f"{path} is not a Carrier")
    return cls


def get_carrier(
    kind: str,
    *,
    credentials: Mapping[str, Any],
    sender: str,
    base_url: str | None = None,
    options: Mapping[str, Any] | None = None,
) -> Carrier:
    return carrier_class(kind)(credentials=credentials, sender=sender, base_url=base_url, options=options)


__all__ = [
    "CARRIERS",
    "CARRIER_CHOICES",
    "Carrier",
    "CarrierError",
    "CredentialField",
    "SendOutcomeUnknown",
    "SendResult",
    "StatusResult",
    "UnknownCarrier",
    "carrier_class",
    "get_carrier",
]
