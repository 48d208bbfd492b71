"""What the browser tests share: where Chromium is and how it starts, the skip without it, and where
screenshots go (test-artifacts/screenshots/; the README's copies in docs/screenshots/ only on request).

Playwright drives Debian's Chromium (/usr/bin/chromium, `scripts/ensure-chromium.sh`), never a downloaded one.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts" / "screenshots"
DOCS = ROOT / "docs" / "screenshots"


def playwright_or_skip() -> Any:
    """Playwright's sync API; called at a test module's top, it skips the whole module without Chromium or
    the playwright package."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"Chromium not found at {CHROMIUM} (run scripts/ensure-chromium.sh)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


def save_screenshot(page: Any, name: str, *, docs: bool = True, full_page: bool = False) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    # The README's copies are refreshed only on request (UPDATE_SCREENSHOTS=1), so a test run leaves the work
    # tree clean.
    if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS / f"{name}.png")
