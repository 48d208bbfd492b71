"""Which widgets and field types a portal gets, read from settings (their defaults are in settings.py).

Settings:
- B24_PLACEMENTS: the CRM list-menu widgets to bind.
- B24_CONSENT_TYPE_CODE: the short code of the SMS-consent userfield type.
- B24_CONSENT_FIELD_ENTITIES: CRM entities that get a field of that type.
- B24_JS_SDK_URL: where frame pages load the BX24 JS SDK from.
- B24_FRAME_TOKEN_MAX_AGE: lifetime (s) of the signed token a verified frame page uses for our API.
- B24_BINDINGS_RECONCILE_SECONDS: how often the periodic reconcile runs.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode

from django.conf import settings
from django.urls import reverse

# The full code rest_<app.info ID>_<code> may be at most 50 characters
# (bitrix24/b24restdocs api-reference/widgets/user-field/userfieldtype-add.md).
USERFIELD_TYPE_FULL_CODE_MAX = 50
USERFIELD_TYPE_CODE_RE = re.compile(r"^[a-z0-9_]{1,50}$")

# Titles shown in Bitrix24's menus, per UI language (LANG_ALL); TITLE itself is the fallback.
PLACEMENT_TITLES: dict[str, dict[str, str]] = {
    "en": {"TITLE": "SMS", "DESCRIPTION": "Send an SMS and see the SMS history"},
    "ru": {"TITLE": "SMS", "DESCRIPTION": "Отправить SMS и посмотреть историю SMS"},
}
CONSENT_TYPE_TITLES: dict[str, str] = {"TITLE": "SMS consent", "DESCRIPTION": "Consent to receive SMS, per phone"}
CONSENT_FIELD_LABELS: dict[str, str] = {"en": "SMS consent", "ru": "Согласие на SMS"}
CONSENT_FIELD_NAME = "SMS_CONSENT"  # Bitrix24 prefixes UF_CRM_

# Deep links: Bitrix24 opens our REST_APP_URI handler in a slider for any link /marketplace/view/<app code>/
# in its content, passing the link's params[...] as PLACEMENT_OPTIONS (values as strings, plus its own URI).
# One handler per app (a second bind is ERROR_PLACEMENT_MAX_COUNT); it takes no OPTIONS and no USER_ID
# (bitrix24/b24restdocs api-reference/widgets/placements/rest-app-uri.md).
APP_URI_PLACEMENT = "REST_APP_URI"
APP_URI_TITLES: dict[str, dict[str, str]] = {
    "en": {"TITLE": "SMS", "DESCRIPTION": "Opens an SMS and its CRM item from a link"},
    "ru": {"TITLE": "SMS", "DESCRIPTION": "Открывает SMS и его элемент CRM по ссылке"},
}
SINGLE_INSTANCE_PLACEMENTS = frozenset({APP_URI_PLACEMENT, "PAGE_BACKGROUND_WORKER"})


def placement_codes() -> list[str]:
    return [str(code).strip().upper() for code in settings.B24_PLACEMENTS if code]


def consent_type_code() -> str:
    return str(settings.B24_CONSENT_TYPE_CODE)


def consent_field_entities() -> list[str]:
    return [str(e).upper() for e in settings.B24_CONSENT_FIELD_ENTITIES]


def sdk_url() -> str:
    return str(settings.B24_JS_SDK_URL)


def frame_token_max_age() -> int:
    return int(settings.B24_FRAME_TOKEN_MAX_AGE)


def reconcile_seconds() -> int:
    return int(settings.B24_BINDINGS_RECONCILE_SECONDS)


def public_url(view_name: str) -> str:
    return f"{settings.PUBLIC_URL}{reverse(view_name)}"


def list_menu_handler() -> str:
    return public_url("placements-crm-list-menu")


def consent_handler() -> str:
    return public_url("placements-consent-field")


def app_uri_handler() -> str:
    return public_url("placements-app-uri")


def placement_handler(code: str) -> str:
    """The handler URL a placement code of ours is bound to."""
    return app_uri_handler() if code == APP_URI_PLACEMENT else list_menu_handler()


def placement_bind_params(code: str) -> dict[str, Any]:
    titles = APP_URI_TITLES if code == APP_URI_PLACEMENT else PLACEMENT_TITLES
    return {
        "PLACEMENT": code,
        "HANDLER": placement_handler(code),
        "TITLE": titles["en"]["TITLE"],
        "DESCRIPTION": titles["en"]["DESCRIPTION"],
        "LANG_ALL": {lang: dict(values) for lang, values in titles.items()},
    }


def app_code(portal: Any) -> str:
    """The code in /marketplace/view/<code>/: app.info CODE as stored at install (the trust rules require
    it to equal B24_CLIENT_ID, the client_id of a local app or the code of a Market app)."""
    return str(portal.app_code or settings.B24_CLIENT_ID)


def deep_link(portal: Any, params: dict[str, str]) -> str:
    """A portal-relative link that opens our REST_APP_URI slider with `params` as PLACEMENT_OPTIONS.

    The brackets of params[...] are percent-encoded (PHP decodes them the same), so the link also survives
    inside a BBCode [url=...] tag."""
    query = urlencode([(f"params[{key}]", value) for key, value in params.items()])
    return f"/marketplace/view/{app_code(portal)}/?{query}"


class BindingConfigError(Exception):
    """The configuration cannot work in this portal (e.g. a type code too long for its app id)."""


def consent_full_code(app_local_id: int | None) -> str:
    """rest_<app.info ID>_<code>: what CRM fields name as their USER_TYPE_ID."""
    code = consent_type_code()
    if app_local_id is None:
        raise BindingConfigError("the portal's app.info ID is not known yet (needed for rest_<ID>_<code>)")
    if not USERFIELD_TYPE_CODE_RE.match(code):
        raise BindingConfigError(f"userfield type code {code!r} must be a-z, 0-9 or _")
    full = f"rest_{app_local_id}_{code}"
    if len(full) > USERFIELD_TYPE_FULL_CODE_MAX:
        raise BindingConfigError(
            f"full userfield type code {full!r} is {len(full)} characters; Bitrix24 allows "
            f"{USERFIELD_TYPE_FULL_CODE_MAX}: shorten B24_CONSENT_TYPE_CODE"
        )
    return full
