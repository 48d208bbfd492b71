"""What the cabinet adds to placements' framed pages (placements.extensions): the template picker in the
list-menu slider's send form, and the way into the cabinet from the app's main page."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.urls import reverse

from placements.extensions import PageAddon

from .access import FRAME_FIELD
from .sms_templates import templates_for

if TYPE_CHECKING:
    from placements.crm import CrmItem
    from placements.frames import FrameContext


def template_picker(context: FrameContext, item: CrmItem, item_token: str) -> PageAddon | None:
    """The templates this user sees (one query); picking one asks the fill API with the slider's item-bound
    token, so the text is filled for exactly the item shown."""
    rows = list(templates_for(context.portal, context.user_id).values("id", "name", "owner_user_id"))
    return PageAddon("cabinet/_template_picker.html", {
        "templates": rows, "fill_url": reverse("cabinet-api-template-fill", args=[0]).replace("/0/", "/{id}/"),
        "manage_url": reverse("cabinet-templates"), "frame_field": FRAME_FIELD, "frame_token": context.frame_token,
    })


def cabinet_entry(context: FrameContext) -> PageAddon | None:
    return PageAddon("cabinet/_entry.html", {
        "frame_field": FRAME_FIELD, "frame_token": context.frame_token, "is_admin": context.is_admin,
        "messages_url": reverse("cabinet-home"), "templates_url": reverse("cabinet-templates"),
        "portal_url": reverse("cabinet-portal"),
    })
