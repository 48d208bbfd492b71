"""Links that work in both kinds of visit: an <a> on our site, a POST carrying the frame token in a frame."""

from __future__ import annotations

from typing import Any

from django import template
from django.utils.html import format_html
from django.utils.safestring import SafeString

from cabinet.access import FRAME_FIELD

register = template.Library()


@register.simple_tag(takes_context=True)
def cabinet_link(context: Any, url: str, label: str, css: str = "") -> SafeString:
    visit = context.get("visit")
    if visit is not None and visit.framed:
        return format_html('<form method="post" action="{}" class="inline"><input type="hidden" name="{}" value="{}">'
                           '<button type="submit" class="link {}">{}</button></form>',
                           url, FRAME_FIELD, visit.token, css, label)
    return format_html('<a href="{}" class="{}">{}</a>', url, css, label)


@register.simple_tag(takes_context=True)
def visit_fields(context: Any) -> SafeString:
    """What a cabinet form carries to say who sends it: the frame token in a frame, the CSRF token on our site."""
    visit = context.get("visit")
    if visit is not None and visit.framed:
        return format_html('<input type="hidden" name="{}" value="{}">', FRAME_FIELD, visit.token)
    token = context.get("csrf_token")
    return format_html('<input type="hidden" name="csrfmiddlewaretoken" value="{}">', token or "")
