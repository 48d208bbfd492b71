"""SMS templates: the tenant- and user-scoped getters, the `do_*` actions, and filling one for a CRM item.

Who may do what comes from the principal (a frame token or the signed-in session's token, both read by
placements.frames.read_frame_token): its user id and its admin flag, proven with user.admin. Nothing in a
request body or form decides it. A template the user may not see is not found (404), whatever its portal;
a portal-wide one a non-administrator tries to change is forbidden (403).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, Q, QuerySet
from django.utils.translation import gettext as _

from messageservice.sending import MAX_BODY_CHARS
from placements.crm import ENTITIES, ITEM_ID_RE, CrmItem, ItemUnavailable, load_fields

from . import placeholders
from .models import SmsTemplate

if TYPE_CHECKING:
    from oauth.client import PortalClient
    from placements.frames import FramePrincipal
    from tenants.models import Portal

NAME_MAX = 100


class TemplateForbidden(Exception):
    """Only portal administrators may create or change portal-wide templates. `reason` is user-facing."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def templates_for(portal: Portal, user_id: int) -> QuerySet[SmsTemplate]:
    """What one user of one portal sees: the portal-wide templates first, then their own (index sms_template_visible)."""
    return (SmsTemplate.objects.filter(portal=portal)
            .filter(Q(owner_user_id=user_id) | Q(owner_user_id__isnull=True))
            .order_by(F("owner_user_id").asc(nulls_first=True), "name", "id"))


def visible_template(portal: Portal, user_id: int, pk: int) -> SmsTemplate:
    """Raises SmsTemplate.DoesNotExist for another user's personal template or another portal's."""
    return templates_for(portal, user_id).get(pk=pk)


def may_edit(principal: FramePrincipal, template: SmsTemplate) -> bool:
    return template.owner_user_id == principal.user_id or (template.is_portal_wide and principal.is_admin)


def _forbid_unless_editable(principal: FramePrincipal, template: SmsTemplate) -> None:
    if not may_edit(principal, template):
        raise TemplateForbidden(_("Only portal administrators may change the portal's shared templates."))


def clean_template(name: Any, body: Any) -> tuple[str, str]:
    errors: dict[str, list[str]] = {}
    name = str(name or "").strip()
    body = str(body or "")
    if not name:
        errors["name"] = [_("Give the template a name.")]
    elif len(name) > NAME_MAX:
        errors["name"] = [_("At most %(n)s characters.") % {"n": NAME_MAX}]
    if not body.strip():
        errors["body"] = [_("The text is empty.")]
    elif len(body) > MAX_BODY_CHARS:
        errors["body"] = [_("At most %(n)s characters.") % {"n": MAX_BODY_CHARS}]
    else:
        try:
            placeholders.check_placeholders(body)
        except ValidationError as exc:
            errors.update(exc.message_dict)
    if errors:
        raise ValidationError(errors)
    return name, body


def do_save_template(principal: FramePrincipal, *, name: Any, body: Any, portal_wide: bool = False,
                     template: SmsTemplate | None = None) -> SmsTemplate:
    """Create (template None) or change a template. `portal_wide` only matters at creation (a template keeps
    its scope). Raises TemplateForbidden or ValidationError (bad input, a name already used in that scope)."""
    if template is None and portal_wide and not principal.is_admin:
        raise TemplateForbidden(_("Only portal administrators may add templates for the whole portal."))
    if template is not None:
        _forbid_unless_editable(principal, template)
    clean_name, clean_body = clean_template(name, body)
    try:
        with transaction.atomic():
            if template is None:
                template = SmsTemplate.objects.create(
                    portal=principal.portal, owner_user_id=None if portal_wide else principal.user_id,
                    name=clean_name, body=clean_body, created_by_user_id=principal.user_id,
                    updated_by_user_id=principal.user_id)
            else:
                template.name, template.body, template.updated_by_user_id = clean_name, clean_body, principal.user_id
                template.save(update_fields=["name", "body", "updated_by_user_id", "updated_at"])
    except IntegrityError:
        raise ValidationError({"name": [_("A template with this name already exists.")]}) from None
    return template


def do_delete_template(principal: FramePrincipal, template: SmsTemplate) -> None:
    _forbid_unless_editable(principal, template)
    with transaction.atomic():
        SmsTemplate.objects.filter(pk=template.pk, portal=principal.portal).delete()


def do_forget_templates(portal: Portal) -> int:
    """The portal's data is purged (clean uninstall)."""
    deleted, _ = SmsTemplate.objects.filter(portal=portal).delete()
    return deleted


# -- filling a template for one CRM item -------------------------------------------------------------------------
def item_records(client: PortalClient, item: CrmItem, *, need_company: bool) -> dict[str, dict[str, Any]]:
    """The person / company / item records placeholders read (placeholders.py). A contact's company is read
    only when the template needs it, with the user's token; one they may not see is simply empty."""
    code = item.entity.code
    person = item.fields if code in ("CONTACT", "LEAD") else item.related.get("CONTACT", {})
    company = item.fields if code == "COMPANY" else item.related.get("COMPANY", {})
    company_id = str(item.fields.get("COMPANY_ID") or "")
    if need_company and code == "CONTACT" and ITEM_ID_RE.match(company_id):
        try:
            company = load_fields(client, ENTITIES["COMPANY"], int(company_id))
        except ItemUnavailable:
            company = {}
    return {"person": person, "company": company, "item": item.fields}


def fill_for_item(client: PortalClient, template: SmsTemplate, item: CrmItem, *, phone: str) -> str:
    """The template's text for this item and phone. Raises B24Error when Bitrix24 cannot answer."""
    need_company = any(name in ("company", "name", "email") for name in placeholders.used_in(template.body))
    records = item_records(client, item, need_company=need_company)
    return placeholders.fill(template.body, placeholders.values_for(records, item_id=item.id, phone=phone))
