"""Places where apps above this one add to the framed pages without this app importing them: the send form of
the list-menu slider (e.g. the cabinet's SMS-template picker), the app's main page (e.g. the cabinet link),
and the administrators' page of the cabinet (sections of sibling apps such as API keys and sync jobs, which
the cabinet cannot import and which cannot import the cabinet).

An app registers a callable in its AppConfig.ready(); each page render asks every callable for a
`PageAddon` (a template to include and its context) or None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .crm import CrmItem
    from .frames import FrameContext, FramePrincipal


@dataclass(frozen=True)
class PageAddon:
    template: str
    context: dict[str, Any] = field(default_factory=dict)


SliderAddon = Callable[["FrameContext", "CrmItem", str], "PageAddon | None"]  # (frame, item, item-bound token)
AppPageAddon = Callable[["FrameContext"], "PageAddon | None"]
PortalSection = Callable[["FramePrincipal"], "PageAddon | None"]

_slider_addons: dict[str, SliderAddon] = {}
_app_page_addons: dict[str, AppPageAddon] = {}
_portal_sections: dict[str, PortalSection] = {}


def register_slider_addon(name: str, addon: SliderAddon) -> None:
    _slider_addons[name] = addon


def register_app_page_addon(name: str, addon: AppPageAddon) -> None:
    _app_page_addons[name] = addon


def register_portal_section(name: str, section: PortalSection) -> None:
    """A card on the cabinet's administrators' page (/cabinet/portal/), asked with the visit's principal
    (already known to be a proven administrator of that portal)."""
    _portal_sections[name] = section


def slider_addons(context: FrameContext, item: CrmItem, item_token: str) -> list[PageAddon]:
    found = (addon(context, item, item_token) for addon in _slider_addons.values())
    return [addon for addon in found if addon is not None]


def app_page_addons(context: FrameContext) -> list[PageAddon]:
    found = (addon(context) for addon in _app_page_addons.values())
    return [addon for addon in found if addon is not None]


def portal_sections(principal: FramePrincipal) -> list[PageAddon]:
    found = (section(principal) for section in _portal_sections.values())
    return [section for section in found if section is not None]
