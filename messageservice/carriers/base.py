"""The carrier interface: results in the delivery-status vocabulary (`messageservice.status`), and
errors that say whether a retry is worth it.

One module per carrier implements `Carrier` (django-anymail style): `send()` one SMS, and
`fetch_statuses()` for many carrier ids (the base splits them into the carrier's batch size).
Each module keeps its raw-code -> `DeliveryStatus` table and its request-level error table as data.

Error contract (what callers, e.g. a Celery task, rely on):

* `CarrierError.retryable` is True when the same request can be repeated later (carrier down, rate
  limit, "temporarily unavailable"); `retry_after` is a hint in seconds when the carrier gives one.
* `SendOutcomeUnknown` (a `CarrierError` with `retryable=False`) means the send request may have
  reached the carrier and been accepted: read timeout, connection dropped after the request went out,
  a 5xx answer, or a "duplicate request" rejection. Sending again can deliver the SMS twice, so
  reconcile first (for carriers where the id is deterministic, `carrier_message_id` is set and can be
  polled).
* A request-level error of a status poll (bad credentials, IP blocked, rate limit) is raised, never
  mapped onto the polled messages.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import requests
from django.core.exceptions import ValidationError
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

from b24portal.http import get_session

from ..status import DeliveryStatus


@dataclass(frozen=True)
class SendResult:
    carrier_message_id: str
    status: DeliveryStatus
    #: the carrier's own status word/code, kept next to the normalized one
    raw_status: str
    #: as the carrier reports it (a decimal string), when it does at send time
    cost: str | None = None


@dataclass(frozen=True)
class StatusResult:
    carrier_message_id: str
    #: None: the carrier does not know the message (yet) or reported an unmapped code
    status: DeliveryStatus | None
    raw_status: str
    #: carrier's error/delivery-failure text or code, if any
    error: str | None = None


@dataclass(frozen=True)
class ErrorRule:
    """How to treat one carrier error code."""

    retryable: bool
    #: seconds, when the carrier documents the window (e.g. "one identical request per minute")
    retry_after: float | None = None
    #: on send: the rejection says an identical request was accepted earlier (duplicate detection),
    #: so the message may already be on its way -> SendOutcomeUnknown, not a plain failure
    duplicate: bool = False


@dataclass(frozen=True)
class CredentialField:
    """One field of a carrier account's `credentials`, declared on the carrier class: admin and the app page
    render a labelled input from it (a password input when `secret`, whose stored value is never shown back:
    blank keeps it), and `Carrier.check_credentials` validates with it."""

    name: str
    label: str
    #: a password, token or key: never shown back, masked in admin
    secret: bool = True
    #: must be present (a carrier with alternatives, e.g. SMSC's login+password or apikey, says so in
    #: `check_credentials` instead)
    required: bool = True
    #: what the value looks like, shown under the input
    hint: str = ""
    #: a full-match regular expression the value must satisfy, and the problem reported when it does not
    pattern: str = ""
    pattern_problem: str = ""
    max_length: int = 500

    def problems(self, value: str) -> list[str]:
        if not value:
            return [f"{self.name} is required"] if self.required else []
        if len(value) > self.max_length:
            return [f"{self.name} is longer than {self.max_length} characters"]
        if self.pattern and not re.fullmatch(self.pattern, value):
            return [self.pattern_problem or f"{self.name} has the wrong format"]
        return []

    def as_dict(self) -> dict[str, Any]:
        """The declaration as JSON for the app page (no pattern: the server validates)."""
        return {"name": self.name, "label": self.label, "secret": self.secret, "required": self.required,
                "hint": self.hint, "max_length": self.max_length}


TRANSIENT = ErrorRule(retryable=True)
PERMANENT = ErrorRule(retryable=False)


class CarrierError(Exception):
    """A carrier call failed. `retryable` says whether repeating the same request later makes sense."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool,
        code: str | None = None,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code
        self.retry_after = retry_after
        self.http_status = http_status
        #: set by `Carrier.fetch_statuses` when an earlier batch succeeded before this one failed
        self.partial_results: dict[str, StatusResult] = {}

    @staticmethod
    def transient(
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        http_status: int | None = None,
    ) -> CarrierError:
        return CarrierError(
            message, retryable=True, code=code, retry_after=retry_after, http_status=http_status
        )

    @staticmethod
    def permanent(message: str, *, code: str | None = None, http_status: int | None = None) -> CarrierError:
        return CarrierError(message, retryable=False, code=code, http_status=http_status)

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}" if self.code else self.message

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.message!r}, retryable={self.retryable}, code={self.code!r}, "
            f"retry_after={self.retry_after!r})"
        )


class SendOutcomeUnknown(CarrierError):
    """The send request may have reached the carrier; whether the SMS goes out is unknown.

    `retryable` is False on purpose: a blind retry can send the SMS twice. Reconcile first (poll
    `carrier_message_id` when the carrier's id is deterministic, else treat as sent or ask a human).
    """

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        retry_after: float | None = None,
        http_status: int | None = None,
        carrier_message_id: str | None = None,
    ) -> None:
        super().__init__(
            message, retryable=False, code=code, retry_after=retry_after, http_status=http_status
        )
        self.carrier_message_id = carrier_message_id


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """`Retry-After` is either delta-seconds or an HTTP-date (RFC 9110 §10.2.3); a date is measured from
    `now` (unix seconds; default: the wall clock)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _connect_failed(exc: BaseException) -> bool:
    """True if the exception chain shows the TCP/TLS connection was never established, i.e. nothing
    of the request was sent (requests wraps urllib3's NewConnectionError in MaxRetryError)."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, NewConnectionError | ConnectTimeoutError | ConnectionRefusedError):
            return True
        if isinstance(item, BaseException):
            stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None), *item.args])
    return False


def transport_error(exc: requests.RequestException, *, carrier: str, during_send: bool) -> CarrierError:
    """Classify a requests exception. Before the request is out (connect refused/timeout, DNS, TLS
    handshake) a retry is safe; once it may have been sent, a send's outcome is unknown."""
    if isinstance(exc, _CONFIG_ERRORS):
        # a bad base URL or header: repeating will not help
        return CarrierError.permanent(f"{carrier}: request could not be made: {exc}")
    if isinstance(exc, requests.ConnectTimeout | requests.exceptions.SSLError) or (
        isinstance(exc, requests.ConnectionError) and _connect_failed(exc)
    ):
        return CarrierError.transient(f"{carrier}: cannot connect: {exc}")
    # read timeout, connection dropped mid-way, broken body: the carrier may have acted on it
    if during_send:
        return SendOutcomeUnknown(f"{carrier}: no complete answer after sending: {exc}")
    return CarrierError.transient(f"{carrier}: no complete answer: {exc}")


_CONFIG_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


def _chunks(items: list[str], size: int) -> Iterable[list[str]]:
    for start in range(0, len(items), max(1, size)):
        yield items[start : start + max(1, size)]


TimeoutSpec = float | tuple[float, float]


def _timeout_option(value: object) -> TimeoutSpec | None:
    """`options["timeout"]`: seconds, or [connect, read]; None keeps the session's default."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, list | tuple) and len(value) == 2:
        return (float(value[0]), float(value[1]))
    return None


class Carrier:
    """Base for one carrier. Instances are cheap and hold no connection: build one per use."""

    kind: ClassVar[str]
    label: ClassVar[str]
    default_base_url: ClassVar[str]
    #: how many ids one status request may carry
    status_batch_size: ClassVar[int] = 1
    #: raw carrier status (as a string) -> normalized status
    status_map: ClassVar[Mapping[str, DeliveryStatus]] = {}
    #: raw statuses meaning "carrier does not know this id": the poller should allow a grace period
    #: after sending before treating them as final
    not_found_codes: ClassVar[frozenset[str]] = frozenset()
    #: shortest time between two status polls of one account (a carrier that blocks frequent polls)
    status_min_interval: ClassVar[float] = 0.0
    #: carrier error code (as a string) -> how to treat it
    error_rules: ClassVar[Mapping[str, ErrorRule]] = {}
    #: the fields of `credentials` (labelled inputs in admin and on the app page; validation)
    credential_fields: ClassVar[tuple[CredentialField, ...]] = ()
    #: keys of `options` this carrier reads, besides `timeout` (which every carrier honours)
    option_names: ClassVar[frozenset[str]] = frozenset()

    def __init__(
        self,
        *,
        credentials: Mapping[str, Any],
        sender: str,
        base_url: str | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.credentials = dict(credentials)
        self.sender = (sender or "").strip()
        self.base_url = (base_url or self.default_base_url).rstrip("/")
        self.options = dict(options or {})
        self.timeout = _timeout_option(self.options.get("timeout"))

    def __repr__(self) -> str:  # never show credentials
        return f"<{type(self).__name__} sender={self.sender!r} base_url={self.base_url!r}>"

    # -- credentials -------------------------------------------------------------------------

    @classmethod
    def check_credentials(cls, credentials: Mapping[str, Any]) -> list[str]:
        """Problems with `credentials`, as human-readable strings (empty list: looks usable)."""
        return [problem for field in cls.credential_fields
                for problem in field.problems(str(credentials.get(field.name) or "").strip())]

    @classmethod
    def credential_names(cls) -> list[str]:
        return [field.name for field in cls.credential_fields]

    @classmethod
    def plain_names(cls) -> frozenset[str]:
        """Declared fields that are not secret (a login, a sender id): the only stored values ever shown."""
        return frozenset(field.name for field in cls.credential_fields if not field.secret)

    # -- options -----------------------------------------------------------------------------

    @classmethod
    def validate_options(cls, options: object) -> dict[str, Any]:
        """The options to store for an account of this carrier. Raises ValidationError listing every
        problem; carriers add checks of their own options in `option_problems`."""
        if not isinstance(options, Mapping):
            raise ValidationError(["must be a JSON object"])
        if problems := cls.option_problems(options):
            raise ValidationError(problems)
        return dict(options)

    @classmethod
    def option_problems(cls, options: Mapping[str, Any]) -> list[str]:
        """Problems with `options`, as human-readable strings. The base knows `timeout` and refuses keys
        the carrier does not read (a typo would otherwise be ignored silently)."""
        problems = [f"{key} is not an option of {cls.label}"
                    for key in options if key != "timeout" and key not in cls.option_names]
        if "timeout" in options:
            value = options["timeout"]
            ok = (isinstance(value, int | float) and not isinstance(value, bool) and value > 0) or (
                isinstance(value, list) and len(value) == 2
                and all(isinstance(v, int | float) and v > 0 for v in value))
            if not ok:
                problems.append("timeout must be seconds or [connect, read]")
        return problems

    # -- sending and polling -------------------------------------------------------------------

    def send(self, to: str, body: str, *, reference: str) -> SendResult:
        """Send one SMS to `to` (E.164). `reference` is our message id, passed to the carrier where it
        supports client ids. Raises CarrierError / SendOutcomeUnknown."""
        raise NotImplementedError

    def fetch_statuses(self, carrier_message_ids: Iterable[str]) -> dict[str, StatusResult]:
        """Current status of each id, in as few requests as the carrier allows. Every requested id gets
        an entry (status None when the carrier did not report it)."""
        ids = list(dict.fromkeys(i for i in carrier_message_ids if i))
        results: dict[str, StatusResult] = {}
        for batch in _chunks(ids, self.status_batch_size):
            try:
                got = self._fetch_batch(batch)
            except CarrierError as exc:
                exc.partial_results = dict(results)
                raise
            for cmid in batch:
                results[cmid] = got.get(cmid) or StatusResult(
                    cmid, None, "", error="not in the carrier's answer"
                )
        return results

    def _fetch_batch(self, carrier_message_ids: list[str]) -> dict[str, StatusResult]:
        raise NotImplementedError

    @classmethod
    def normalize(cls, raw: object) -> DeliveryStatus | None:
        if raw is None:
            return None
        return cls.status_map.get(str(raw).strip())

    # -- helpers for subclasses ----------------------------------------------------------------

    def carrier_error(
        self,
        code: str | int | None,
        message: str,
        *,
        during_send: bool,
        http_status: int | None = None,
        retry_after: float | None = None,
        carrier_message_id: str | None = None,
    ) -> CarrierError:
        """Build the error for a carrier-reported failure using `error_rules`; unknown codes fall back
        on the HTTP status (429/503 transient, other 5xx transient or unknown on send, 4xx permanent)."""
        code_s = None if code is None else str(code)
        rule = self.error_rules.get(code_s) if code_s is not None else None
        if rule is None:
            if http_status is not None and (http_status == 429 or http_status >= 500):
                rule = TRANSIENT
            elif code_s is None and (http_status is None or http_status < 400):
                rule = TRANSIENT  # no code, no error status: garbled answer, try again
            else:
                rule = PERMANENT
        text = f"{self.label}: {message}"
        retry_after = retry_after if retry_after is not None else rule.retry_after
        # 503 means "not handled, come back later"; other 5xx may come after the SMS was queued
        ambiguous_5xx = http_status is not None and http_status >= 500 and http_status != 503
        if during_send and (rule.duplicate or ambiguous_5xx):
            return SendOutcomeUnknown(
                text,
                code=code_s,
                retry_after=retry_after,
                http_status=http_status,
                carrier_message_id=carrier_message_id,
            )
        if rule.retryable:
            return CarrierError.transient(text, code=code_s, retry_after=retry_after, http_status=http_status)
        return CarrierError.permanent(text, code=code_s, http_status=http_status)

    def http_post(self, path: str, data: Mapping[str, Any], *, during_send: bool) -> Any:
        """POST form data through the process's pooled session; return the decoded JSON answer.
        HTTP-level failures become CarrierError (see module docstring)."""
        session = get_session()
        kwargs: dict[str, Any] = {"data": dict(data)}
        if self.timeout is not None:
            kwargs["timeout"] = self.timeout
        try:
            response = session.post(f"{self.base_url}{path}", **kwargs)
        except requests.RequestException as exc:
            raise transport_error(exc, carrier=self.label, during_send=during_send) from exc
        if response.status_code != 200:
            raise self.carrier_error(
                None,
                f"HTTP {response.status_code} from {path}",
                during_send=during_send,
                http_status=response.status_code,
                retry_after=parse_retry_after(response.headers.get("Retry-After")),
            )
        try:
            return response.json()
        except ValueError as exc:
            # a 200 with an HTML page (proxy, maintenance): nothing we can read
            if during_send:
                raise SendOutcomeUnknown(f"{self.label}: unreadable answer from {path}") from exc
            raise CarrierError.transient(f"{self.label}: unreadable answer from {path}") from exc
