from __future__ import annotations

from typing import Any

from .actions import do_forget_bindings


def forget_bindings_on_purge(sender: Any, portal: Any, **kwargs: Any) -> None:
    do_forget_bindings(portal)
