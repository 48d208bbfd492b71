"""This app's install steps: the CRM widgets, the deep-link slider (REST_APP_URI) and the SMS-consent field
type (bind, then verify)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from installs.steps import StepFailed, install_step

from . import bindings

if TYPE_CHECKING:
    from oauth.client import PortalClient
    from tenants.models import Portal


def _run(portal: Portal, client: PortalClient, desired: list[bindings.Desired]) -> str:
    report = bindings.sync(portal, client, desired, repair=True, first_install=True)
    if report.errors:
        raise StepFailed(report.summary())
    return report.summary()


@install_step("placements", title="Add the SMS widgets to CRM lists", order=30)
def bind_placements(portal: Portal, client: PortalClient) -> str:
    return _run(portal, client, bindings.desired_placements())


@install_step("userfield_types", title="Register the SMS-consent field type", order=31)
def bind_userfield_types(portal: Portal, client: PortalClient) -> str:
    # The CRM fields themselves can only be added once the install has finished (Bitrix24 answers
    # "Invalid user type specified" before): the reconcile or the staff action adds them.
    return _run(portal, client, bindings.desired_types())


@install_step("app_uri", title="Add deep links into the app (REST_APP_URI)", order=32)
def bind_app_uri(portal: Portal, client: PortalClient) -> str:
    return _run(portal, client, bindings.desired_app_uri())
