"""The portal-host allow-list (B24_PORTAL_DOMAINS): the SSRF boundary.

No request carrying a token is ever sent to a host that is not on it. Patterns: an exact host
("portal.example.com"), a wildcard over one or more labels ("*.bitrix24.com"), and optionally a port
("127.0.0.1:*" for any port, "host:8443" for one).
"""

from __future__ import annotations

import re
from functools import lru_cache

from django.conf import settings

_HOST_RE = re.compile(r"^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$")


def split_host_port(domain: str) -> tuple[str, int | None] | None:
    """'Host[:port]' → (host, port), or None when it is not a plain host name with an optional port."""
    domain = domain.strip().lower()
    host, sep, port = domain.partition(":")
    if not _HOST_RE.match(host):
        return None
    if sep:
        if not port.isdigit() or not 0 < int(port) < 65536:
            return None
        return host, int(port)
    return host, None


@lru_cache(maxsize=64)
def _compile(patterns: tuple[str, ...]) -> list[tuple[re.Pattern[str], str | None]]:
    compiled = []
    for pattern in patterns:
        host, _, port = pattern.strip().lower().partition(":")
        regex = re.escape(host).replace(r"\*", r"[a-z0-9-]+(?:\.[a-z0-9-]+)*")
        compiled.append((re.compile(f"^{regex}$"), port or None))
    return compiled


def is_allowed_domain(domain: str | None) -> bool:
    if not domain:
        return False
    parsed = split_host_port(domain)
    if parsed is None:
        return False
    host, port = parsed
    patterns = tuple(settings.B24_PORTAL_DOMAINS)
    if settings.SANDBOX_ENABLED:  # the sandbox portal (development only) lives on this service's own address
        patterns += (settings.SANDBOX_DOMAIN,)
    for regex, allowed_port in _compile(patterns):
        if not regex.match(host):
            continue
        if allowed_port == "*" or (allowed_port is None and port is None) or (
            allowed_port is not None and port is not None and allowed_port == str(port)
        ):
            return True
    return False


def rest_endpoint_for(domain: str, https: bool) -> str:
    return f"{'https' if https else 'http'}://{domain.strip().lower()}/rest/"


def domain_of_endpoint(endpoint: str) -> str | None:
    """'https://x.bitrix24.com/rest/' → 'x.bitrix24.com' (None for anything that is not a /rest/ URL)."""
    match = re.match(r"^(https?)://([^/?#@]+)/rest/?$", endpoint.strip(), re.IGNORECASE)
    return match.group(2).lower() if match else None
