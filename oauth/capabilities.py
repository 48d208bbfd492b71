"""What each portal grants us: scopes, the REST methods the product needs, and a few features.

Apps declare what they need in one registry, from their AppConfig.ready():

    from oauth.capabilities import require_methods
    require_methods("messageservice.sender.add", "messageservice.sender.list", scope="messageservice",
                    app="messageservice")

A webhook-connected portal has no application context: only requirements declared `for_webhooks=True`
(features that work through an incoming webhook, such as CRM records) are checked for it; the others
(widgets, SMS provider, events) belong to features it cannot have.

The check is ONE batch request (`scope`, `method.get` per required method, `feature.get` per watched
feature), run as the first install step (order 5) and daily for every active portal (beat). The outcome
is kept per portal (`PortalCapabilities`, shown in admin). An install whose portal lacks a required scope
or method fails that step with a reason naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import transaction
from django.utils import timezone

from tenants.journal import journal
from tenants.models import Portal

from .client import PortalClient
from .models import PortalCapabilities

# Features we record (not require): offline events and their auth connectors (spec §7).
DEFAULT_FEATURES = ("rest_offline_extended", "rest_auth_connector")


@dataclass
class Requirement:
    method: str
    scope: str | None
    apps: set[str] = field(default_factory=set)
    for_webhooks: bool = False


_methods: dict[str, Requirement] = {}
_scopes: dict[str, set[str]] = {}
_webhook_scopes: set[str] = set()
_features: list[str] = list(DEFAULT_FEATURES)


def require_methods(*methods: str, scope: str | None = None, app: str = "", for_webhooks: bool = False) -> None:
    """Declare REST methods (and optionally their scope) the product needs in every portal. Idempotent.
    `for_webhooks`: webhook-connected portals need them too (the feature works through a webhook)."""
    for method in methods:
        name = method.strip().lower()
        if not name or name == "batch":
            raise ValueError(f"not a method name: {method!r}")
        requirement = _methods.setdefault(name, Requirement(name, scope))
        requirement.scope = requirement.scope or scope
        requirement.for_webhooks = requirement.for_webhooks or for_webhooks
        if app:
            requirement.apps.add(app)
    if scope:
        require_scopes(scope, app=app, for_webhooks=for_webhooks)


def require_scopes(*scopes: str, app: str = "", for_webhooks: bool = False) -> None:
    for scope in scopes:
        _scopes.setdefault(scope.strip(), set()).update({app} if app else set())
        if for_webhooks:
            _webhook_scopes.add(scope.strip())


def watch_features(*codes: str) -> None:
    """Record these `feature.get` codes per portal (no install fails for them)."""
    for code in codes:
        if code not in _features:
            _features.append(code)


def required_methods(*, webhook: bool = False) -> list[str]:
    """What every portal must grant; `webhook=True`: what a webhook-connected portal must grant."""
    return sorted(name for name, requirement in _methods.items() if requirement.for_webhooks or not webhook)


def required_scopes(*, webhook: bool = False) -> list[str]:
    return sorted(_webhook_scopes & set(_scopes)) if webhook else sorted(_scopes)


def watched_features() -> list[str]:
    return list(_features)


@dataclass
class Snapshot:
    scopes: list[str]
    methods: dict[str, dict[str, bool]]
    features: dict[str, bool]
    missing: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing


def probe(client: PortalClient) -> Snapshot:
    """One batch: scope + method.get per required method + feature.get per watched feature."""
    webhook = client.portal.is_webhook
    commands: dict[str, Any] = {"scope": ("scope", {})}
    methods = required_methods(webhook=webhook)
    for i, method in enumerate(methods):
        commands[f"m{i}"] = ("method.get", {"name": method})
    features = watched_features()
    for i, code in enumerate(features):
        commands[f"f{i}"] = ("feature.get", {"CODE": code})
    batch = client.batch(commands)
    if "scope" in batch.errors:
        raise batch.errors["scope"]
    granted = [str(s) for s in (batch.results.get("scope") or []) if isinstance(s, str)]
    missing = [f"scope {scope}" for scope in required_scopes(webhook=webhook) if scope not in granted]
    found: dict[str, dict[str, bool]] = {}
    for i, method in enumerate(methods):
        row = batch.results.get(f"m{i}")
        if not isinstance(row, dict):
            error = batch.errors.get(f"m{i}")
            missing.append(f"method {method} (method.get failed: {error.code if error else 'no answer'})")
            continue
        found[method] = {"isExisting": bool(row.get("isExisting")), "isAvailable": bool(row.get("isAvailable"))}
        if not found[method]["isExisting"]:
            missing.append(f"method {method} (does not exist)")
        elif not found[method]["isAvailable"]:
            scope = _methods[method].scope
            missing.append(f"method {method} (not available{f'; needs scope {scope}' if scope else ''})")
    flags = {}
    for i, code in enumerate(features):
        row = batch.results.get(f"f{i}")
        flags[code] = isinstance(row, dict) and str(row.get("value", "")).upper() == "Y"
    return Snapshot(scopes=granted, methods=found, features=flags, missing=missing)


def do_record_capabilities(portal: Portal, snapshot: Snapshot | None, *, error: str = "") -> PortalCapabilities:
    """Store a check's outcome; journal when what is missing changed (not on every daily run)."""
    with transaction.atomic():
        caps, _ = PortalCapabilities.objects.select_for_update().get_or_create(portal=portal)
        before = list(caps.missing)
        caps.checked_at = timezone.now()
        caps.error = error[:255]
        if snapshot is not None:
            caps.scopes, caps.methods, caps.features = snapshot.scopes, snapshot.methods, snapshot.features
            caps.missing, caps.ok = snapshot.missing, snapshot.ok
        caps.save()
        if snapshot is not None and snapshot.missing != before:
            journal(portal, "rest",
                            ("capabilities: missing " + "; ".join(snapshot.missing))[:500] if snapshot.missing
                            else "capabilities: everything required is available",
                            level="warning" if snapshot.missing else "info",
                            details={"missing": snapshot.missing, "features": snapshot.features})
    return caps


def check_portal(portal: Portal, client: PortalClient) -> PortalCapabilities:
    """Probe and store. B24Errors (limits, auth) propagate so the caller can retry or fail."""
    return do_record_capabilities(portal, probe(client))
