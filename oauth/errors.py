"""Typed Bitrix24 errors, each saying whether a retry is worth it.

The classification is data (`ERROR_CODES`) so that a new code is one line. `retryable` means "the same
request may succeed later"; `sent` on transport errors says whether the request may have reached
Bitrix24 (then a non-idempotent method must not be repeated blindly). Errors that carry `retry_after`
(`B24RetryLater` and its subclasses) say how long to wait: Celery tasks turn them into
`self.retry(countdown=oauth.client.retry_delay(exc, self.request.retries))` instead of sleeping.
"""

from __future__ import annotations

from typing import Any


class B24Error(Exception):
    retryable = False
    # A method an administrator must confirm first: the work waits for that decision (oauth.confirmation).
    awaits_confirmation = False

    def __init__(self, code: str, description: str = "", *, http_status: int | None = None,
                 method: str = "", payload: Any = None) -> None:
        self.code = code
        self.description = description
        self.http_status = http_status
        self.method = method
        self.payload = payload
        super().__init__(f"{code}: {description}" if description else code)


class B24TransientError(B24Error):
    """Worth retrying later (rate limit, overload, a 5xx on a safe method)."""

    retryable = True


class B24RetryLater(B24TransientError):
    """Wait `retry_after` seconds, then the same request may succeed (a limit, not a fault)."""

    def __init__(self, *args: Any, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.retry_after = retry_after


class B24RateLimited(B24RetryLater):
    """The portal's leaky bucket is full: 503 QUERY_LIMIT_EXCEEDED / OVERLOAD_LIMIT from Bitrix24, or our own
    limiter (code `RATE_LIMIT_WAIT`) saying the next permit is further away than this caller may wait."""


class B24OperationLimit(B24RetryLater):
    """429 OPERATION_TIME_LIMIT (or our guard deferring before it, code `OPERATING_DEFERRED`): this method is
    blocked for this app until `reset_at` (unix seconds)."""

    def __init__(self, *args: Any, reset_at: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset_at = reset_at


class B24TransportError(B24Error):
    """No usable HTTP answer. `sent` = the request may have reached Bitrix24. Retryable when it surely did
    not, or when the method only reads (repeating it changes nothing)."""

    def __init__(self, description: str, *, sent: bool, method: str = "", safe: bool = False) -> None:
        super().__init__("TRANSPORT_ERROR", description, method=method)
        self.sent = sent
        self.retryable = (not sent) or safe


class B24BadResponse(B24Error):
    """An answer that is not Bitrix24's JSON envelope (HTML error page, truncated or garbage body). A write
    may have been executed behind it, so only a read is worth repeating."""

    def __init__(self, description: str, *, http_status: int | None, method: str = "", safe: bool = False) -> None:
        super().__init__("BAD_RESPONSE", description, http_status=http_status, method=method)
        self.retryable = safe


class B24AuthError(B24Error):
    """The token is not accepted (other than plain expiry)."""


class B24TokenExpired(B24AuthError):
    """401 expired_token: refresh and repeat once."""

    retryable = True


class B24TokensRevoked(B24AuthError):
    """The OAuth server will not refresh (invalid_grant / invalid_client): the portal needs a reinstall."""


class B24PaymentRequired(B24AuthError):
    """PAYMENT_REQUIRED: the app's paid or trial period is over."""


class B24AccessDenied(B24Error):
    """Scope, rights or licence: terminal until someone changes the portal."""


class B24MethodConfirmWaiting(B24Error):
    """401 METHOD_CONFIRM_WAITING (spec §7): a portal administrator must confirm this method for this
    application. Neither a failure nor worth a retry: the work is parked until ONAPPMETHODCONFIRM says yes or
    no. The confirmation is tied to the access token the call used (`token_hash`; the client sets it, with
    the portal), so after a refresh the call waits again."""

    awaits_confirmation = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token_hash = ""
        self.portal_id: int | None = None


class B24MethodConfirmDenied(B24AccessDenied):
    """403 METHOD_CONFIRM_DENIED: an administrator refused this application the method."""

    def __init__(self, code: str, description: str = "", **kwargs: Any) -> None:
        method = kwargs.get("method") or "this method"
        super().__init__(code, f"an administrator of the portal denied the app {method} ({description or 'Method call denied'})",
                         **kwargs)


class B24MethodNotFound(B24Error):
    """ERROR_METHOD_NOT_FOUND: the method does not exist here (module off, v3-only method, typo)."""


class B24PortalDeleted(B24Error):
    """PORTAL_DELETED: nothing will ever work again for this portal."""


class B24PortalMoved(B24Error):
    """A 302 that could not be followed (target not allowed, or a second redirect)."""


ERROR_CODES: dict[str, type[B24Error]] = {
    "QUERY_LIMIT_EXCEEDED": B24RateLimited,
    "OVERLOAD_LIMIT": B24RateLimited,
    "OPERATION_TIME_LIMIT": B24OperationLimit,
    "INTERNAL_SERVER_ERROR": B24TransientError,
    "ERROR_UNEXPECTED_ANSWER": B24TransientError,
    "expired_token": B24TokenExpired,
    "invalid_token": B24AuthError,
    "NO_AUTH_FOUND": B24AuthError,
    "WRONG_AUTH_TYPE": B24AccessDenied,
    "invalid_grant": B24TokensRevoked,
    "invalid_client": B24TokensRevoked,
    "PAYMENT_REQUIRED": B24PaymentRequired,
    "insufficient_scope": B24AccessDenied,
    "invalid_scope": B24AccessDenied,
    "ACCESS_DENIED": B24AccessDenied,
    "INVALID_CREDENTIALS": B24AccessDenied,
    "user_access_error": B24AccessDenied,
    "METHOD_CONFIRM_WAITING": B24MethodConfirmWaiting,
    "METHOD_CONFIRM_DENIED": B24MethodConfirmDenied,
    "ERROR_METHOD_NOT_FOUND": B24MethodNotFound,
    "PORTAL_DELETED": B24PortalDeleted,
    "ERROR_BATCH_LENGTH_EXCEEDED": B24Error,
    "ERROR_BATCH_METHOD_NOT_ALLOWED": B24Error,
}

# Codes that are transient only when the method is safe to repeat: a 500 on a write may have acted.
_SAFE_ONLY_TRANSIENT = {"INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"}

# A manual block by Bitrix24 support (OVERLOAD_LIMIT) lifts slowly; do not hammer it.
OVERLOAD_RETRY_AFTER = 300.0


def error_from_envelope(code: str, description: str, *, http_status: int | None, method: str,
                        payload: Any = None, safe: bool = False) -> B24Error:
    cls = ERROR_CODES.get(code)
    if cls is None:
        # Unknown codes: a 5xx on a method that is safe to repeat is worth retrying; anything else is not.
        cls = B24TransientError if (http_status or 0) >= 500 and safe else B24Error
    elif code in _SAFE_ONLY_TRANSIENT and not safe:
        cls = B24Error
    if cls is B24OperationLimit:
        reset_at = None
        if isinstance(payload, dict):
            time_block = payload.get("time")
            if not isinstance(time_block, dict):
                time_block = {}
            reset_at = time_block.get("operating_reset_at") or payload.get("operating_reset_at")
        try:
            reset_at = float(reset_at) if reset_at is not None else None
        except (TypeError, ValueError):
            reset_at = None
        return B24OperationLimit(code, description, http_status=http_status, method=method, payload=payload,
                                 reset_at=reset_at)
    if cls is B24RateLimited:
        return B24RateLimited(code, description, http_status=http_status, method=method, payload=payload,
                              retry_after=OVERLOAD_RETRY_AFTER if code == "OVERLOAD_LIMIT" else None)
    return cls(code, description, http_status=http_status, method=method, payload=payload)
