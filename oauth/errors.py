"""Typed Bitrix24 errors, each saying whether a retry is worth it.

The classification is data (`ERROR_CODES`) so that a new code is one line. `retryable` means "the same
request may succeed later"; `sent` on transport errors says whether the request may have reached
Bitrix24 (then a non-idempotent method must not be repeated blindly).
"""

from __future__ import annotations

from typing import Any


class B24Error(Exception):
    retryable = False

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


class B24RateLimited(B24TransientError):
    """503 QUERY_LIMIT_EXCEEDED / OVERLOAD_LIMIT: the portal's leaky bucket is full."""


class B24OperationLimit(B24TransientError):
    """429 OPERATION_TIME_LIMIT: this method is blocked for this app until `reset_at`."""

    def __init__(self, *args: Any, reset_at: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.reset_at = reset_at


class B24TransportError(B24Error):
    """No usable HTTP answer. `sent` = the request may have reached Bitrix24."""

    def __init__(self, description: str, *, sent: bool, method: str = "") -> None:
        super().__init__("TRANSPORT_ERROR", description, method=method)
        self.sent = sent
        self.retryable = not sent  # type: ignore[misc]


class B24BadResponse(B24Error):
    """An answer that is not Bitrix24's JSON envelope (HTML error page, truncated body)."""

    def __init__(self, description: str, *, http_status: int | None, method: str = "", safe: bool = False) -> None:
        super().__init__("BAD_RESPONSE", description, http_status=http_status, method=method)
        self.retryable = safe and (http_status or 0) >= 500  # type: ignore[misc]


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


class B24MethodNotFound(B24Error):
    pass


class B24PortalDeleted(B24Error):
    pass


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
    "METHOD_CONFIRM_WAITING": B24AccessDenied,
    "METHOD_CONFIRM_DENIED": B24AccessDenied,
    "ERROR_METHOD_NOT_FOUND": B24MethodNotFound,
    "PORTAL_DELETED": B24PortalDeleted,
}


def error_from_envelope(code: str, description: str, *, http_status: int | None, method: str,
                        payload: Any = None, safe: bool = False) -> B24Error:
    cls = ERROR_CODES.get(code)
    if cls is None:
        # Unknown codes: a 5xx on a method that is safe to repeat is worth retrying; anything else is not.
        cls = B24TransientError if (http_status or 0) >= 500 and safe else B24Error
    if cls is B24OperationLimit:
        reset_at = None
        if isinstance(payload, dict):
            reset_at = (payload.get("time") or {}).get("operating_reset_at") or payload.get("operating_reset_at")
        return B24OperationLimit(code, description, http_status=http_status, method=method, payload=payload,
                                 reset_at=reset_at)
    return cls(code, description, http_status=http_status, method=method, payload=payload)
