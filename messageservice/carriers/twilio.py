"""Twilio Programmable Messaging through the official SDK (`twilio.rest.Client`).

* Send: `POST /2010-04-01/Accounts/{AC}/Messages.json` (To, From or MessagingServiceSid, Body,
  StatusCallback). Twilio has no idempotency key for this call, so `reference` can only travel in the
  StatusCallback URL (option `status_callback`, "{reference}" is replaced).
* Status: `GET .../Messages/{SM}.json`, one message per request -- there is no lookup by a list of
  SIDs (the list endpoint filters by To/From/DateSent only).
* Rate limiting is per-account concurrency: HTTP 429 / error 20429, safe to retry with backoff.
* The SDK's HTTP goes through `_HttpClient`, which uses this process's pooled session (timeouts,
  no environment proxies) and can point at another base URL (tests use a fake Twilio).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response as TwilioResponse
from twilio.rest import Client

from b24portal.http import get_session

from ..status import DeliveryStatus
from .base import (
    Carrier,
    CarrierError,
    CredentialField,
    ErrorRule,
    SendOutcomeUnknown,
    SendResult,
    StatusResult,
    TimeoutSpec,
    parse_retry_after,
    transport_error,
)

S = DeliveryStatus

#: Message resource `status` (https://www.twilio.com/docs/messaging/api/message-resource, the status table);
#: `receiving`/`received` are inbound only
STATUS_MAP: dict[str, DeliveryStatus] = {
    "accepted": S.QUEUED,  # Messaging Service accepted it
    "scheduled": S.QUEUED,
    "queued": S.QUEUED,
    "sending": S.QUEUED,
    "sent": S.SENT,  # may stay final when the operator sends no DLR: the poller needs a TTL
    "delivered": S.DELIVERED,
    "read": S.DELIVERED,
    "partially_delivered": S.DELIVERED,  # product decision: some segments reached the handset
    "undelivered": S.UNDELIVERED,
    "failed": S.FAILED,
    "canceled": S.FAILED,  # scheduled message canceled: never sent
}

P = ErrorRule(retryable=False)
T = ErrorRule(retryable=True)

#: REST API error `code`s (https://www.twilio.com/docs/api/errors)
ERROR_RULES: dict[str, ErrorRule] = {
    "20003": P,  # authentication failed
    "20005": P,  # account not active
    "20008": P,  # test credentials cannot use this resource
    "20404": P,  # resource not found (wrong account SID in the path)
    "20429": T,  # too many requests (account concurrency)
    "20500": T,  # internal server error (on send: outcome unknown, see base)
    "20503": T,  # service unavailable
    "21211": P,  # invalid 'To' number
    "21212": P,  # invalid 'From' number
    "21408": P,  # permission to send to this region not enabled
    "21602": P,  # message body required
    "21606": P,  # 'From' is not an SMS-capable number of this account
    "21610": P,  # recipient unsubscribed (replied STOP)
    "21612": P,  # cannot route to this number
    "21614": P,  # 'To' is not a mobile number
    "21617": P,  # body exceeds 1600 characters
}

_ACCOUNT_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")


class _HttpClient(TwilioHttpClient):
    """Send the SDK's requests through `get_session()`, optionally to another scheme+host."""

    def __init__(self, *, base_url: str | None, timeout: TimeoutSpec | None) -> None:
        super().__init__(pool_connections=False)
        self.base_url = base_url
        self.request_timeout = timeout
        self.last_response: requests.Response | None = None

    def _rewrite(self, url: str) -> str:
        if not self.base_url:
            return url
        target = urlsplit(self.base_url)
        parts = urlsplit(url)
        path = target.path.rstrip("/") + parts.path
        return urlunsplit((target.scheme, target.netloc, path, parts.query, parts.fragment))

    def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> TwilioResponse:
        kwargs: dict[str, Any] = {
            "params": params,
            "data": data,
            "headers": headers,
            "auth": auth,
            "allow_redirects": allow_redirects,
        }
        chosen = timeout or self.request_timeout
        if chosen is not None:
            kwargs["timeout"] = chosen
        self.last_response = None
        # no request logging here: the SDK's default logs phone numbers at INFO
        response = get_session().request(method.upper(), self._rewrite(url), **kwargs)
        self.last_response = response
        return TwilioResponse(int(response.status_code), response.text, response.headers)


class TwilioCarrier(Carrier):
    kind: ClassVar[str] = "twilio"
    label: ClassVar[str] = "Twilio"
    default_base_url: ClassVar[str] = "https://api.twilio.com"
    status_batch_size: ClassVar[int] = 1
    status_map: ClassVar[dict[str, DeliveryStatus]] = STATUS_MAP
    error_rules: ClassVar[dict[str, ErrorRule]] = ERROR_RULES
    credential_fields: ClassVar[tuple[CredentialField, ...]] = (
        CredentialField("account_sid", "Account SID", secret=False, hint="AC followed by 32 hex digits "
                        "(Twilio Console → Account info)", pattern=_ACCOUNT_SID.pattern,
                        pattern_problem="account_sid must look like AC followed by 32 hex digits"),
        CredentialField("auth_token", "Auth token", hint="32 hex digits, next to the Account SID"),
    )
    option_names: ClassVar[frozenset[str]] = frozenset({"status_callback"})

    def __init__(
        self,
        *,
        credentials: Mapping[str, Any],
        sender: str,
        base_url: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(credentials=credentials, sender=sender, base_url=base_url, options=options)
        base = self.base_url if self.base_url != self.default_base_url else None
        self._http = _HttpClient(base_url=base, timeout=self.timeout)
        sid = str(self.credentials.get("account_sid", ""))
        self._client = Client(
            username=sid,
            password=str(self.credentials.get("auth_token", "")),
            account_sid=sid,
            http_client=self._http,
            # a non-empty mapping so the SDK does not read TWILIO_* (region, edge) from os.environ
            environment={"B24PORTAL": "1"},
        )

    def _error(self, exc: TwilioRestException | TwilioServiceException, *, during_send: bool) -> CarrierError:
        response = self._http.last_response
        retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
        if isinstance(exc, TwilioServiceException):  # newer APIs answer RFC 9457 problem details
            message = str(exc.detail or exc.title)
        else:
            message = str(exc.msg)
        return self.carrier_error(
            exc.code,
            message,
            during_send=during_send,
            http_status=exc.status,
            retry_after=retry_after,
        )

    def send(self, to: str, body: str, *, reference: str) -> SendResult:
        kwargs: dict[str, Any] = {"to": to, "body": body}
        if self.sender.startswith("MG"):
            kwargs["messaging_service_sid"] = self.sender
        else:
            kwargs["from_"] = self.sender
        callback = self.options.get("status_callback")
        if callback:
            kwargs["status_callback"] = str(callback).replace("{reference}", quote(str(reference), safe=""))
        try:
            message = self._client.messages.create(**kwargs)
        except requests.RequestException as exc:
            raise transport_error(exc, carrier=self.label, during_send=True) from exc
        except (TwilioRestException, TwilioServiceException) as exc:
            raise self._error(exc, during_send=True) from exc
        except (TwilioException, ValueError) as exc:  # 2xx with a body the SDK cannot read
            raise SendOutcomeUnknown(f"{self.label}: unreadable answer: {exc}") from exc
        raw = str(message.status or "")
        if not message.sid:
            raise SendOutcomeUnknown(f"{self.label}: accepted but no sid in the answer")
        price = message.price
        return SendResult(
            str(message.sid),
            self.normalize(raw) or S.QUEUED,
            raw,
            cost=None if price in (None, "") else str(price),
        )

    def _fetch_batch(self, carrier_message_ids: list[str]) -> dict[str, StatusResult]:
        results: dict[str, StatusResult] = {}
        for sid in carrier_message_ids:
            try:
                message = self._client.messages(sid).fetch()
            except requests.RequestException as exc:
                raise transport_error(exc, carrier=self.label, during_send=False) from exc
            except (TwilioRestException, TwilioServiceException) as exc:
                if exc.status == 404:
                    # this SID is unknown to the account: about the message, not the request
                    results[sid] = StatusResult(sid, None, "", error=f"not found ({exc.code})")
                    continue
                raise self._error(exc, during_send=False) from exc
            except (TwilioException, ValueError) as exc:
                raise CarrierError.transient(f"{self.label}: unreadable answer: {exc}") from exc
            raw = str(message.status or "")
            error = None
            if message.error_code:
                error = f"{message.error_code}: {message.error_message or ''}".rstrip(": ")
            results[sid] = StatusResult(sid, self.normalize(raw), raw, error=error)
        return results
