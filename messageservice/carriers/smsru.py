"""SMS.ru (https://sms.ru/api): `sms/send` and `sms/status` with `json=1`.

Wire format: every answer has a top-level `status` ("OK"/"ERROR") and `status_code`; a top-level
error concerns the whole request (bad api_id, no funds, service unavailable). Per-number (send) and
per-id (status) entries sit under `sms`, each with its own `status`/`status_code`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..status import DeliveryStatus
from .base import (
    Carrier,
    CarrierError,
    CredentialField,
    ErrorRule,
    SendOutcomeUnknown,
    SendResult,
    StatusResult,
)

S = DeliveryStatus

#: per-message status codes of `sms/status` (https://sms.ru/api/status)
STATUS_MAP: dict[str, DeliveryStatus] = {
    "-1": S.FAILED,  # message not found (poller: allow a grace period after sending)
    "100": S.QUEUED,  # accepted, in SMS.ru's queue
    "101": S.QUEUED,  # being handed to the operator
    "102": S.SENT,  # sent, in transit
    "103": S.DELIVERED,
    "104": S.UNDELIVERED,  # lifetime expired
    "105": S.FAILED,  # deleted by the operator
    "106": S.UNDELIVERED,  # handset failure
    "107": S.UNDELIVERED,  # unknown reason
    "108": S.FAILED,  # rejected
    "110": S.DELIVERED,  # read (Viber)
    "150": S.FAILED,  # no route to this number
}

P = ErrorRule(retryable=False)
T = ErrorRule(retryable=True)

#: request-level codes (top-level `status_code`) and per-number send errors
ERROR_RULES: dict[str, ErrorRule] = {
    "200": P,  # wrong api_id
    "201": P,  # not enough money on the account (needs a human to top up)
    "202": P,  # wrong recipient number
    "203": P,  # no message text
    "204": P,  # sender name not approved
    "205": P,  # message too long (> 8 SMS)
    "206": T,  # account's daily limit reached; CORE treats it as "deferred"
    "207": P,  # no route / may not send to this number
    "208": P,  # bad `time` parameter
    "209": P,  # number is in the account's stop list
    "210": P,  # GET used where POST is required
    "211": P,  # method not found
    "212": P,  # text must be UTF-8
    "213": P,  # too many recipients
    "214": P,  # foreign number, account restricted to Russia
    "215": P,  # number in SMS.ru's spam stop list
    "216": P,  # forbidden word in the text
    "220": T,  # service temporarily unavailable, "try a bit later"
    "230": T,  # daily limit of messages to this number
    # identical message to this number within a minute / a day: an earlier identical request went
    # through, so sending again would duplicate it
    "231": ErrorRule(retryable=False, duplicate=True),
    "232": ErrorRule(retryable=False, duplicate=True),
    "233": P,  # too many code messages to this number in a short time
    "300": P,  # bad token
    "301": P,  # wrong api_id or login/password
    "302": P,  # account not confirmed
    "500": T,  # server error, "repeat the request"
    "501": P,  # limit: client IP is a TOR exit
    "502": P,  # limit: client IP country mismatch
    "503": T,  # limit: too many messages to this country in a short time
    "504": T,  # limit: too many foreign auth codes in a short time
    "505": T,  # limit: too many messages from one IP
    "506": P,  # limit: hosting provider IP
    "507": P,  # bad IP address
    "508": T,  # limit: calls in 5 minutes
    "901": P,  # callback URL invalid
    "902": P,  # callback handler not found
}


def _digits(phone: str) -> str:
    return "".join(ch for ch in phone if ch.isdigit())


class SmsRuCarrier(Carrier):
    kind: ClassVar[str] = "smsru"
    label: ClassVar[str] = "SMS.ru"
    default_base_url: ClassVar[str] = "https://sms.ru"
    # sms/send takes at most 100 recipients per request; no documented limit for sms/status, so we
    # keep to the same number (keeps the comma list well inside URL/body limits)
    status_batch_size: ClassVar[int] = 100
    status_map: ClassVar[dict[str, DeliveryStatus]] = STATUS_MAP
    not_found_codes: ClassVar[frozenset[str]] = frozenset({"-1"})
    error_rules: ClassVar[dict[str, ErrorRule]] = ERROR_RULES
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("api_id", "API key (api_id)", hint="From sms.ru → Settings → API: a code such as "
                        "1A2B3C4D-0000-1111-2222-333344445555", max_length=100),
    )
    #: `test`: SMS.ru's test mode (the request is checked and priced, nothing is sent)
    option_names: ClassVar[frozenset[str]] = frozenset({"test"})

    def _auth(self) -> dict[str, str]:
        return {"api_id": str(self.credentials.get("api_id", "")), "json": "1"}

    def _request_error(self, answer: Any, *, during_send: bool) -> CarrierError | None:
        if not isinstance(answer, dict):
            if during_send:
                return SendOutcomeUnknown(f"{self.label}: unexpected answer shape")
            return CarrierError.transient(f"{self.label}: unexpected answer shape")
        if answer.get("status") != "OK":
            return self.carrier_error(
                answer.get("status_code"),
                str(answer.get("status_text") or "request rejected"),
                during_send=during_send,
            )
        return None

    def send(self, to: str, body: str, *, reference: str) -> SendResult:
        # SMS.ru has no client message id, so `reference` cannot make the send idempotent
        number = _digits(to)
        data = {**self._auth(), "to": number, "msg": body}
        if self.sender:
            data["from"] = self.sender
        if self.options.get("test"):
            data["test"] = "1"  # SMS.ru test mode: validated and answered, not sent, not charged
        answer = self.http_post("/sms/send", data, during_send=True)
        error = self._request_error(answer, during_send=True)
        if error is not None:
            raise error
        entries = answer.get("sms") or {}
        entry = entries.get(number) if isinstance(entries, dict) else None
        if entry is None and isinstance(entries, dict) and len(entries) == 1:
            entry = next(iter(entries.values()))  # SMS.ru may key it by its own form of the number
        if not isinstance(entry, dict):
            raise SendOutcomeUnknown(f"{self.label}: answer has no entry for the recipient")
        if entry.get("status") != "OK":
            raise self.carrier_error(
                entry.get("status_code"),
                str(entry.get("status_text") or "message rejected"),
                during_send=True,
            )
        sms_id = str(entry.get("sms_id") or "")
        if not sms_id:
            raise SendOutcomeUnknown(f"{self.label}: accepted but no sms_id in the answer")
        raw = str(entry.get("status_code", "100"))
        return SendResult(sms_id, self.normalize(raw) or S.QUEUED, raw)

    def _fetch_batch(self, carrier_message_ids: list[str]) -> dict[str, StatusResult]:
        data = {**self._auth(), "sms_id": ",".join(carrier_message_ids)}
        answer = self.http_post("/sms/status", data, during_send=False)
        error = self._request_error(answer, during_send=False)
        if error is not None:
            raise error
        entries = answer.get("sms") or {}
        results: dict[str, StatusResult] = {}
        for cmid in carrier_message_ids:
            entry = entries.get(cmid) if isinstance(entries, dict) else None
            if not isinstance(entry, dict):
                continue
            raw = str(entry.get("status_code", ""))
            status = self.normalize(raw)
            text = entry.get("status_text")
            failed = entry.get("status") != "OK" or status in (S.UNDELIVERED, S.FAILED)
            results[cmid] = StatusResult(cmid, status, raw, error=str(text) if failed and text else None)
        return results
