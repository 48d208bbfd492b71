"""The newcomer's path with zero configuration: `make run` (embedded defaults, its own web process, workers
and beat) prints the sandbox URL, and the tour works through it over HTTP: install → the sandbox carrier
account's sender and the consent field appear → an SMS sent from a card ends "delivered" in its timeline,
with every status coming from the real worker and beat processes."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from django.conf import settings

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException:
            value = None
        if value:
            return value
        time.sleep(1)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{log.read_text()[-4000:]}")


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "FIELD_ENCRYPTION_KEY", "SECRET_KEY",
                        "B24_PORTAL_DOMAINS", "PUBLIC_URL", "DEBUG", "B24_CLIENT_ID", "B24_CLIENT_SECRET",
                        "SANDBOX_ENABLED")}
    env["VAR_DIR"] = str(tmp_path / "var")
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=settings.BASE_DIR, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield f"http://127.0.0.1:{port}", log_path
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_make_run_prints_the_sandbox_and_its_tour_delivers_an_sms_with_zero_configuration(make_run):
    base, log = make_run
    wait_for(lambda: f"Sandbox Bitrix24: {base}/sandbox/" in log.read_text(), 180, "the sandbox URL printed", log)
    browser = requests.Session()
    wait_for(lambda: browser.get(f"{base}/sandbox/", timeout=5).status_code == 200, 180, "the sandbox page", log)
    workers_ready = lambda: all(re.search(rf"{name}@\S+ ready\.", log.read_text()) for name in ("sms", "general"))  # noqa: E731
    wait_for(workers_ready, 180, "both workers ready", log)
    headers = {"X-CSRFToken": browser.cookies["csrftoken"]}

    frame = browser.post(f"{base}/sandbox/frame/", data={"kind": "install"}, headers=headers, timeout=30).json()
    page = browser.post(frame["action"], data=frame["fields"], timeout=30)
    found = re.search(r'var statusUrl = "([^"]+)"', page.text)
    assert found, f"{page.status_code} {page.text[:2000]}\n{log.read_text()[-4000:]}"
    status_url = base + found.group(1)
    run = wait_for(lambda: (r := requests.get(status_url, timeout=10).json())["status"] not in ("pending", "running")
                   and r, 120, "the install run", log)
    assert run["status"] == "succeeded", run
    finish = browser.post(f"{base}/sandbox/bx24/", data={"method": "installFinish"}, headers=headers, timeout=30)
    assert finish.json() == {"installed": True, "prepared": "account created"}

    contact = re.search(r'href="/sandbox/crm/contact/(\d+)/" class="item-link">Ivan Petrov',
                        browser.get(f"{base}/sandbox/crm/contact/", timeout=10).text).group(1)
    card = f"{base}/sandbox/crm/contact/{contact}/"
    wait_for(lambda: 'id="card-send-form"' in (text := browser.get(card, timeout=10).text) and 'id="field-frame"' in text,
             120, "the sandbox sender and consent field", log)
    sent = browser.post(f"{card}send/", data={"phone": "+79991234567", "body": "Hello from make run"},
                        headers=headers, timeout=30).json()
    assert sent["handler_status"] == 200 and sent["handler_answer"]["state"] == "accepted", sent

    def delivered() -> list[str] | None:
        rows = browser.get(f"{card}timeline/", timeout=10).json()["rows"]
        sms = [row for row in rows if row["kind"] == "sms"]
        return [h["status"] for h in sms[0]["history"]] if sms and sms[0]["status"] == "delivered" else None

    history = wait_for(delivered, 120, "delivered in the sandbox timeline", log)
    assert history[-1] == "delivered"
