from __future__ import annotations

from typing import Any

from .sms_templates import do_forget_templates


def forget_templates_on_purge(sender: Any, portal: Any, **kwargs: Any) -> None:
    do_forget_templates(portal)
