"""Bringing a portal's bindings in line with what it should have, and recording what we found.

Used by the install steps (bind, then verify), the periodic reconcile (repair what Bitrix24 dropped: it
removes widgets on uninstall and handlers on app update) and the staff actions (rebind, unbind).
Every repair and failure is journaled (kind "binding"). Bitrix24 is the source of truth: a row says what
the portal showed the last time we looked (placement.get / userfieldtype.list / crm.*.userfield.list).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from oauth.errors import B24Error
from oauth.periodic import Vanished, check_now
from tenants.journal import Actor, journal
from tenants.models import JournalEntry

from . import config
from .models import Binding

if TYPE_CHECKING:
    from oauth.client import PortalClient
    from tenants.models import Portal

Kind, State = Binding.Kind, Binding.State

#: the periodic check (tenants.schedule kind) that runs the full reconcile (`actions.do_reconcile_portal`)
BINDINGS_CHECK = "bindings"

#: Answers to our normal (non-reconcile) calls that mean a registration of ours is gone. Bitrix24 drops an
#: app's widget handlers together (app update), so one gone is a reason to verify them all now. Not listed:
#: ERROR_PLACEMENT_NOT_FOUND (placement.bind: the portal has no such placement code, e.g. without the crm
#: scope; a reconcile would meet the same answer) and userfieldtype.update's ERROR_NOT_FOUND (it follows an
#: add refused because the code or handler is taken, i.e. held by someone else, not vanished).
VANISHED: Vanished = {
    ("userfieldtype.delete", "ERROR_NOT_FOUND"): BINDINGS_CHECK,
}


@dataclass(frozen=True)
class Desired:
    kind: str
    code: str
    handler: str


@dataclass
class Actual:
    """What the portal itself shows."""

    placements: set[tuple[str, str]] = field(default_factory=set)  # (code, handler)
    types: dict[str, str] = field(default_factory=dict)  # short USER_TYPE_ID -> HANDLER
    fields: dict[str, str] = field(default_factory=dict)  # entity -> FIELD_NAME of a field of our type


@dataclass
class SyncReport:
    bound: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        parts = []
        if self.repaired:
            parts.append(f"bound {', '.join(self.repaired)}")
        if self.bound:
            parts.append(f"already bound {', '.join(self.bound)}")
        if self.errors:
            parts.append("failed " + "; ".join(f"{k}: {v}" for k, v in self.errors.items()))
        return "; ".join(parts) or "nothing to bind"


def desired_placements() -> list[Desired]:
    handler = config.list_menu_handler()
    return [Desired(Kind.PLACEMENT, code, handler) for code in config.placement_codes()]


def desired_app_uri() -> list[Desired]:
    return [Desired(Kind.PLACEMENT, config.APP_URI_PLACEMENT, config.app_uri_handler())]


def desired_types() -> list[Desired]:
    return [Desired(Kind.USERFIELD_TYPE, config.consent_type_code(), config.consent_handler())]


def desired_fields() -> list[Desired]:
    return [Desired(Kind.USERFIELD, f"{entity}:UF_CRM_{config.CONSENT_FIELD_NAME}", "")
            for entity in config.consent_field_entities()]


def fetch_actual(client: PortalClient, portal: Portal, kinds: Iterable[str]) -> Actual:
    kinds = set(kinds)
    actual = Actual()
    if Kind.PLACEMENT in kinds:
        # camelCase keys (bitrix24/b24restdocs api-reference/widgets/placement-get.md).
        for row in client.call("placement.get") or []:
            if isinstance(row, dict):
                actual.placements.add((str(row.get("placement", "")).upper(), str(row.get("handler", ""))))
    if Kind.USERFIELD_TYPE in kinds or Kind.USERFIELD in kinds:
        for row in client.list("userfieldtype.list"):
            if isinstance(row, dict):
                actual.types[str(row.get("USER_TYPE_ID", ""))] = str(row.get("HANDLER", ""))
    if Kind.USERFIELD in kinds:
        full_code = config.consent_full_code(portal.app_local_id)
        for entity in config.consent_field_entities():
            rows = client.call(f"crm.{entity.lower()}.userfield.list", {"filter": {"USER_TYPE_ID": full_code}})
            for row in rows or []:
                if isinstance(row, dict) and row.get("USER_TYPE_ID") == full_code:
                    actual.fields[entity] = str(row.get("FIELD_NAME", ""))
    return actual


def is_present(desired: Desired, actual: Actual) -> bool:
    if desired.kind == Kind.PLACEMENT:
        return (desired.code, desired.handler) in actual.placements
    if desired.kind == Kind.USERFIELD_TYPE:
        return actual.types.get(desired.code) == desired.handler
    return desired.code.split(":", 1)[0] in actual.fields


def create(client: PortalClient, portal: Portal, desired: Desired) -> None:
    """One bind call. Raises B24Error (or BindingConfigError)."""
    if desired.kind == Kind.PLACEMENT:
        try:
            client.call("placement.bind", config.placement_bind_params(desired.code))
        except B24Error as exc:
            # A single-instance placement bound to another handler (PUBLIC_URL changed): Bitrix24 keeps one
            # per app and refuses a second, so the old registration goes first (ours: the app's own record).
            if exc.code != "ERROR_PLACEMENT_MAX_COUNT" or desired.code not in config.SINGLE_INSTANCE_PLACEMENTS:
                raise
            client.call("placement.unbind", {"PLACEMENT": desired.code})
            client.call("placement.bind", config.placement_bind_params(desired.code))
    elif desired.kind == Kind.USERFIELD_TYPE:
        config.consent_full_code(portal.app_local_id)  # refuse a code Bitrix24 would cut or reject
        params: dict[str, Any] = {"USER_TYPE_ID": desired.code, "HANDLER": desired.handler,
                                  **config.CONSENT_TYPE_TITLES, "OPTIONS": {"height": 0}}
        try:
            client.call("userfieldtype.add", params)
        except B24Error as exc:
            # Ours but with another handler (PUBLIC_URL changed): point it at the current one.
            if exc.code != "ERROR_CORE":
                raise
            client.call("userfieldtype.update", params)
    else:
        entity = desired.code.split(":", 1)[0]
        labels = config.CONSENT_FIELD_LABELS
        client.call(f"crm.{entity.lower()}.userfield.add", {"fields": {
            "FIELD_NAME": config.CONSENT_FIELD_NAME,
            "USER_TYPE_ID": config.consent_full_code(portal.app_local_id),
            "XML_ID": config.CONSENT_FIELD_NAME,
            "MULTIPLE": "N", "MANDATORY": "N", "SHOW_FILTER": "N",
            "EDIT_FORM_LABEL": labels, "LIST_COLUMN_LABEL": labels, "LIST_FILTER_LABEL": labels,
        }})


def removal_method(binding: Binding) -> str:
    if binding.kind == Kind.PLACEMENT:
        return "placement.unbind"
    if binding.kind == Kind.USERFIELD_TYPE:
        return "userfieldtype.delete"
    raise ValueError("CRM fields hold customer data; delete them in Bitrix24 itself")


def remove(client: PortalClient, portal: Portal, binding: Binding) -> Any:
    method = removal_method(binding)
    if binding.kind == Kind.PLACEMENT:
        # With HANDLER only our own record goes; without it Bitrix24 would drop every handler of the code.
        # The answer's count is found + removed (a documented quirk), so it is kept, not interpreted here.
        return client.call(method, {"PLACEMENT": binding.code, "HANDLER": binding.handler})
    return client.call(method, {"USER_TYPE_ID": binding.code})


def found_nothing(binding: Binding, result: Any) -> bool:
    """placement.unbind found no record of ours (count 0, while found + removed is 2 per record): the
    handler had vanished before we asked."""
    return (binding.kind == Kind.PLACEMENT and isinstance(result, dict)
            and str(result.get("count", "")).strip() == "0")


def _record(portal: Portal, desired: Desired, state: str, *, error: str = "", bound_now: bool = False,
            repaired: bool = False) -> Binding:
    now = timezone.now()
    binding, _created = Binding.objects.get_or_create(
        portal=portal, kind=desired.kind, code=desired.code, defaults={"handler": desired.handler})
    binding.handler = desired.handler
    binding.state = state
    binding.last_checked_at = now
    binding.last_error = error[:500]
    fields = ["handler", "state", "last_checked_at", "last_error", "updated_at"]
    if bound_now:
        binding.last_bound_at = now
        fields.append("last_bound_at")
    if repaired:
        binding.repairs += 1
        fields.append("repairs")
    binding.save(update_fields=fields)
    return binding


def notice_lost(portal: Portal, actual: Actual, fetched: set[str], wanted: list[Desired]) -> list[str]:
    """Our other registrations of the kinds just fetched that we recorded bound but the portal no longer
    shows: Bitrix24 dropped them (it drops an app's handlers together), so the full reconcile runs now."""
    kinds = {Kind.PLACEMENT} & fetched
    if fetched & {Kind.USERFIELD_TYPE, Kind.USERFIELD}:
        kinds.add(Kind.USERFIELD_TYPE)
    wanted_keys = {(d.kind, d.code) for d in wanted}
    lost = [b.code for b in Binding.objects.filter(portal=portal, state=State.BOUND, kind__in=kinds).order_by("code")
            if (b.kind, b.code) not in wanted_keys and not is_present(desired_for(b), actual)]
    if lost:
        check_now(portal, BINDINGS_CHECK, f"{', '.join(lost)} no longer bound in the portal")
    return lost


def sync(portal: Portal, client: PortalClient, desired: list[Desired], *, repair: bool, actor: Actor = Actor.SYSTEM,
         first_install: bool = False, watch_others: bool = False) -> SyncReport:
    """Compare, create what is missing (when `repair`), verify again, record and journal.

    Rows a staff member unbound stay unbound until rebound. A B24Error that is retryable (rate limit, a
    5xx on a read) propagates so the caller's task can retry; everything else becomes the row's error.
    `watch_others` (a staff action on a few items): what the portal shows of our other registrations is
    compared too, and one that vanished makes the full reconcile due (`notice_lost`)."""
    report = SyncReport()
    skipped = set(Binding.objects.filter(portal=portal, state=State.UNBOUND).values_list("kind", "code"))
    wanted = [d for d in desired if (d.kind, d.code) not in skipped]
    if not wanted:
        return report
    kinds = {d.kind for d in wanted}
    actual = fetch_actual(client, portal, kinds)
    if watch_others:
        notice_lost(portal, actual, kinds, wanted)
    created: list[Desired] = []
    missing = [item for item in wanted if not is_present(item, actual)]
    report.bound.extend(item.code for item in wanted if item not in missing)
    # Several widgets at once go in one batch request (one permit of the portal's rate limit, not four).
    # Single-instance codes go alone: their repair may need an unbind first (see `create`).
    batchable = [item for item in missing if item.kind == Kind.PLACEMENT
                 and item.code not in config.SINGLE_INSTANCE_PLACEMENTS] if repair else []
    if len(batchable) > 1:
        result = client.batch({item.code: ("placement.bind", config.placement_bind_params(item.code))
                               for item in batchable})
        for item in batchable:
            error = result.errors.get(item.code)
            if error is None:
                created.append(item)
            elif error.retryable:
                raise error
            else:
                report.errors[item.code] = f"{error.code}: {error.description}"
    for item in missing:
        if item in batchable and len(batchable) > 1:
            continue
        if not repair:
            report.errors[item.code] = "missing"
            continue
        try:
            create(client, portal, item)
            created.append(item)
        except config.BindingConfigError as exc:
            report.errors[item.code] = str(exc)
        except B24Error as exc:
            if exc.retryable:
                raise
            report.errors[item.code] = f"{exc.code}: {exc.description}"
    if created:
        actual = fetch_actual(client, portal, {d.kind for d in created})  # verify, don't trust "true"
        for item in created:
            if is_present(item, actual):
                report.repaired.append(item.code)
            else:
                report.errors[item.code] = "bound, but the portal does not show it"
    with transaction.atomic():
        for item in wanted:
            if item.code in report.errors:
                is_missing = report.errors[item.code] == "missing"
                _record(portal, item, State.MISSING if is_missing else State.ERROR,
                        error="" if is_missing else report.errors[item.code])
            else:
                _record(portal, item, State.BOUND, bound_now=item.code in report.repaired,
                        repaired=item.code in report.repaired and not first_install)
        if report.repaired and not first_install:
            journal(portal, JournalEntry.Kind.BINDING, f"re-created what the portal had lost: "
                    f"{', '.join(report.repaired)}", level="warning", actor=actor,
                    details={"repaired": report.repaired})
        if report.errors:
            journal(portal, JournalEntry.Kind.BINDING, "bindings failed: " +
                    "; ".join(f"{k}: {v}" for k, v in report.errors.items()), level="error", actor=actor,
                    details={"errors": report.errors})
    return report


def desired_for(binding: Binding) -> Desired:
    if binding.kind == Kind.PLACEMENT:
        return Desired(binding.kind, binding.code, config.placement_handler(binding.code))
    handler = config.consent_handler() if binding.kind == Kind.USERFIELD_TYPE else ""
    return Desired(binding.kind, binding.code, handler)
