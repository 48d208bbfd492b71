"""The registry of install steps, and the flow's own steps (capabilities check, app events).

Each app contributes named steps (placement binding, userfield types, SMS senders, ...). A step is a
function `step(portal, client) -> str` returning a short report, raising `StepFailed(reason)` or a
B24Error. Steps must be idempotent: they run on install, on every app update (Bitrix24 drops bindings
then), on staff re-runs, and from periodic reconciles.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings

from oauth.capabilities import check_portal
from oauth.client import PortalClient
from tenants.models import Portal

StepFunc = Callable[["Portal", "PortalClient"], str]


class StepFailed(Exception):
    """The step cannot succeed as things are; the message says why (shown to the installing admin)."""


@dataclass(frozen=True)
class InstallStep:
    name: str
    title: str
    order: int
    func: StepFunc


_registry: dict[str, InstallStep] = {}


def install_step(name: str, *, title: str, order: int = 100) -> Callable[[StepFunc], StepFunc]:
    def register(func: StepFunc) -> StepFunc:
        _registry[name] = InstallStep(name=name, title=title, order=order, func=func)
        return func

    return register


def get_install_steps() -> list[InstallStep]:
    return sorted(_registry.values(), key=lambda step: (step.order, step.name))


def get_install_step(name: str) -> InstallStep | None:
    return _registry.get(name)


@install_step("capabilities", title="Check scopes and REST methods", order=5)
def capabilities_step(portal: Portal, client: PortalClient) -> str:
    caps = check_portal(portal, client)
    if caps.missing:
        raise StepFailed("The portal does not grant what this app needs: " + "; ".join(caps.missing))
    features = ", ".join(f"{code}={'Y' if on else 'N'}" for code, on in caps.features.items())
    return f"{len(caps.methods)} methods available; scopes {', '.join(caps.scopes) or '-'}; {features}"


# The app events we handle at PUBLIC_URL/b24/events/. ONAPPINSTALL is set on the app card instead.
# ONAPPMETHODCONFIRM: an administrator's decision on a method that needs confirmation (oauth.confirmation).
APP_EVENTS = ("ONAPPUNINSTALL", "ONAPPUPDATE", "ONAPPPAYMENT", "ONAPPMETHODCONFIRM")


def events_handler_url() -> str:
    return f"{settings.PUBLIC_URL}/b24/events/"


@install_step("app_events", title="Subscribe to app events", order=10)
def bind_app_events(portal: Portal, client: PortalClient) -> str:
    """event.get, then event.bind for whatever is missing, then event.get again to verify."""
    handler = events_handler_url()

    def bound() -> set[str]:
        rows = client.call("event.get") or []
        return {str(row.get("event", "")).upper() for row in rows
                if isinstance(row, dict) and row.get("handler") == handler}

    missing = [event for event in APP_EVENTS if event not in bound()]
    if missing:
        batch = client.batch({event: ("event.bind", {"event": event, "handler": handler}) for event in missing})
        errors = {key: err for key, err in batch.errors.items() if "ALREADY" not in err.code.upper()}
        if errors:
            raise StepFailed("; ".join(f"{key}: {err.code} {err.description}" for key, err in errors.items()))
        still_missing = [event for event in APP_EVENTS if event not in bound()]
        if still_missing:
            raise StepFailed(f"event.get does not show {', '.join(still_missing)} after binding")
    return f"bound {', '.join(missing)}" if missing else "already bound"
