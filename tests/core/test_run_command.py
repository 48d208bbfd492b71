"""The README's run command on embedded defaults: `make run` with no DATABASE_URL / REDIS_URL starts web,
the SMS worker, the general worker and beat, and /health/ready/ answers ok (SQLite, kombu's filesystem
broker)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from django.conf import settings

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_make_run_starts_web_worker_and_beat_on_embedded_defaults(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "FIELD_ENCRYPTION_KEY", "SECRET_KEY",
                        "B24_PORTAL_DOMAINS", "PUBLIC_URL", "DEBUG")}
    env["VAR_DIR"] = str(tmp_path / "var")
    log_path = tmp_path / "run.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen(["make", "run", f"PORT={port}"], cwd=settings.BASE_DIR, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    try:
        ready, deadline = None, time.monotonic() + 120
        while time.monotonic() < deadline:
            output = log_path.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/ready/", timeout=2) as response:
                    ready = json.loads(response.read())
            except OSError:
                ready = None
            if ready and "sms@" in output and "general@" in output and output.count(" ready.") >= 2 \
                    and "beat: Starting" in output:
                break
            time.sleep(1)
        output = log_path.read_text()
        assert ready is not None and ready["status"] == "ok", output[-3000:]
        assert ready["checks"]["database"]["vendor"] == "sqlite"
        assert ready["checks"]["broker"]["transport"] == "filesystem"
        assert "beat: Starting" in output, output[-3000:]
        # Two workers: one for SMS only, one for everything else (README "Workers and queues").
        assert re.search(r"sms@\S+ ready\.", output) and re.search(r"general@\S+ ready\.", output), output[-3000:]
        assert re.search(r"\.> sms\s+exchange=sms", output) and re.search(r"\.> maintenance\s+exchange=", output), \
            output[-3000:]
        assert (tmp_path / "var" / "db.sqlite3").exists()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
