"""SMSC (smsc.ru / smsc.ua / smscentre.com, one API): `/sys/send.php` and `/sys/status.php`, `fmt=3`.

Quirks this module handles:

* A status lookup needs the phone as well as the id, so our carrier_message_id is "<id>:<digits>".
* `id` on send is the client's own message id (a 32-bit number); we derive it from `reference`, which
  makes the carrier id known before sending: a send whose outcome is unknown can be reconciled by
  polling it (status -3 "not found" means it never arrived).
* SMSC rejects an identical send request repeated within a minute (error 9), so a blind retry of the
  same reference is refused rather than duplicated -- but that error then means "the first one may
  have gone out" (SendOutcomeUnknown), not "retry".
* Batch status: `phone` and `id` are comma lists in matching order, always with a trailing comma so
  the answer is the multi-message format (a JSON list) even for one message.
* Every answer is HTTP 200; errors come as {"error": text, "error_code": N}.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
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

#: `status` of status.php (https://smsc.ru/api/http/status_messages/status_answer/)
STATUS_MAP: dict[str, DeliveryStatus] = {
    "-3": S.FAILED,  # message not found (poller: allow a grace period after sending)
    "-2": S.FAILED,  # stopped
    "-1": S.QUEUED,  # waiting to be sent
    "0": S.SENT,  # passed to the operator
    "1": S.DELIVERED,
    "2": S.DELIVERED,  # read
    "3": S.UNDELIVERED,  # expired
    "4": S.DELIVERED,  # link clicked
    "20": S.UNDELIVERED,  # cannot be delivered
    "22": S.FAILED,  # wrong number format
    "23": S.FAILED,  # prohibited
    "24": S.FAILED,  # insufficient funds
    "25": S.UNDELIVERED,  # unreachable number
}

#: `error_code` of send.php / status.php
ERROR_RULES: dict[str, ErrorRule] = {
    "1": ErrorRule(retryable=False),  # error in parameters
    "2": ErrorRule(retryable=False),  # wrong login/password (or IP not in the allowed list)
    "3": ErrorRule(retryable=False),  # not enough money (send)
    # IP temporarily blocked: 10 min after 100 bad requests in a row, 30 min after 5 auth errors
    "4": ErrorRule(retryable=True, retry_after=600),
    "5": ErrorRule(retryable=False),  # wrong date format (send) / error deleting (status)
    "6": ErrorRule(retryable=False),  # message prohibited (text or sender name)
    "7": ErrorRule(retryable=False),  # wrong phone number format
    "8": ErrorRule(retryable=False),  # cannot be delivered to this number
    # identical request within a minute, too many status requests, or >= 5 concurrent connections;
    # on send the identical earlier request may have been accepted
    "9": ErrorRule(retryable=True, retry_after=60, duplicate=True),
}

_MAX_CLIENT_ID = 2**31 - 1


def client_message_id(reference: str) -> int:
    """SMSC's client `id` is a number in 1..2147483647: use a numeric reference as is, else a stable
    hash of it (only needs to be unique per phone number)."""
    ref = str(reference).strip()
    if ref.isdigit() and 0 < int(ref) <= _MAX_CLIENT_ID:
        return int(ref)
    digest = hashlib.sha256(ref.encode()).digest()
    return int.from_bytes(digest[:8], "big") % _MAX_CLIENT_ID + 1


def _digits(phone: str) -> str:
    return "".join(ch for ch in str(phone) if ch.isdigit())


def split_message_id(carrier_message_id: str) -> tuple[str, str]:
    sms_id, _, phone = carrier_message_id.partition(":")
    return sms_id, phone


class SmscCarrier(Carrier):
    kind: ClassVar[str] = "smsc"
    label: ClassVar[str] = "SMSC"
    default_base_url: ClassVar[str] = "https://smsc.ru"
    # no documented maximum for a batch, but only ONE mass status request per minute is allowed
    # (error 9), so a batch should cover everything one poll needs
    status_batch_size: ClassVar[int] = 500
    status_map: ClassVar[dict[str, DeliveryStatus]] = STATUS_MAP
    not_found_codes: ClassVar[frozenset[str]] = frozenset({"-3"})
    # SMSC answers error 9 to more than one status request per minute (its FAQ on IP blocking).
    status_min_interval: ClassVar[float] = 60.0
    error_rules: ClassVar[dict[str, ErrorRule]] = ERROR_RULES
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("login", "Login", secret=False, required=False, hint="Your smsc.ru login",
                        max_length=100),
        CredentialField("password", "Password", required=False, hint="The account's password (or use an API key)"),
        CredentialField("apikey", "API key", required=False,
                        hint="smsc.ru → Settings → API key; instead of login and password"),
    )

    @classmethod
    def check_credentials(cls, credentials: Mapping[str, Any]) -> list[str]:
        if str(credentials.get("apikey") or "").strip():
            return []
        missing = [f for f in ("login", "password") if not str(credentials.get(f) or "").strip()]
        if missing:
            return [f"{' and '.join(missing)} required (or an apikey)"]
        return []

    def _auth(self) -> dict[str, str]:
        apikey = str(self.credentials.get("apikey") or "").strip()
        base = {"fmt": "3", "charset": "utf-8"}  # default charset is windows-1251
        if apikey:
            return {**base, "apikey": apikey}
        return {
            **base,
            "login": str(self.credentials.get("login", "")),
            "psw": str(self.credentials.get("password", "")),
        }

    def send(self, to: str, body: str, *, reference: str) -> SendResult:
        number = _digits(to)
        sms_id = client_message_id(reference)
        cmid = f"{sms_id}:{number}"
        data = {
            **self._auth(),
            # a leading "+" turns off SMSC's automatic number "correction"
            "phones": f"+{number}",
            "mes": body,
            "id": str(sms_id),
            "cost": "3",  # send, and answer with the cost and the new balance
        }
        if self.sender:
            data["sender"] = self.sender
        try:
            answer = self.http_post("/sys/send.php", data, during_send=True)
        except SendOutcomeUnknown as exc:
            exc.carrier_message_id = cmid  # pollable: the id was ours
            raise
        if not isinstance(answer, dict):
            raise SendOutcomeUnknown(f"{self.label}: unexpected answer shape", carrier_message_id=cmid)
        if "error_code" in answer or "error" in answer:
            raise self.carrier_error(
                answer.get("error_code"),
                str(answer.get("error") or "request rejected"),
                during_send=True,
                carrier_message_id=cmid,
            )
        if "id" not in answer:
            raise SendOutcomeUnknown(f"{self.label}: answer has no id", carrier_message_id=cmid)
        cost = answer.get("cost")
        return SendResult(
            f"{answer['id']}:{number}",
            S.QUEUED,
            "accepted",  # send.php reports no status; -1 (waiting) is what status.php shows next
            cost=None if cost is None else str(cost),
        )

    def _fetch_batch(self, carrier_message_ids: list[str]) -> dict[str, StatusResult]:
        pairs = [split_message_id(cmid) for cmid in carrier_message_ids]
        data = {
            **self._auth(),
            "id": "".join(f"{sms_id}," for sms_id, _ in pairs),
            "phone": "".join(f"{phone}," for _, phone in pairs),
        }
        answer = self.http_post("/sys/status.php", data, during_send=False)
        if isinstance(answer, dict) and ("error_code" in answer or "error" in answer):
            raise self.carrier_error(
                answer.get("error_code"),
                str(answer.get("error") or "request rejected"),
                during_send=False,
            )
        if isinstance(answer, dict):  # single-message format, in case the trailing comma was ignored
            answer = [{"id": pairs[0][0], "phone": pairs[0][1], **answer}] if len(pairs) == 1 else []
        if not isinstance(answer, list):
            raise CarrierError.transient(f"{self.label}: unexpected status answer shape")

        by_key = {
            (sms_id, phone): cmid for cmid, (sms_id, phone) in zip(carrier_message_ids, pairs, strict=True)
        }
        by_id: dict[str, list[str]] = {}
        for cmid, (sms_id, _) in zip(carrier_message_ids, pairs, strict=True):
            by_id.setdefault(sms_id, []).append(cmid)

        results: dict[str, StatusResult] = {}
        for item in answer:
            if not isinstance(item, dict):
                continue
            sms_id, phone = str(item.get("id", "")), _digits(item.get("phone", ""))
            found = by_key.get((sms_id, phone))
            if found is None and len(by_id.get(sms_id, [])) == 1:
                found = by_id[sms_id][0]
            if found is None:
                continue
            cmid = found
            if "status" not in item:
                results[cmid] = StatusResult(
                    cmid, None, "", error=str(item.get("error") or item.get("error_code") or "no status")
                )
                continue
            raw = str(item["status"])
            err = item.get("err")
            results[cmid] = StatusResult(
                cmid, self.normalize(raw), raw, error=str(err) if err not in (None, "", 0, "0") else None
            )
        return results
