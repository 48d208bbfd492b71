#!/bin/sh
# Make sure `wrk` (the HTTP load generator the handler benchmark drives gunicorn with) is installed.
# Idempotent: does nothing when wrk is on PATH. Uses Debian's package (apt-get install wrk), never a
# source build. Without root (or without apt-get) it only says what is missing; the benchmark then
# falls back to its Python client and says so in its output.
set -eu

if command -v wrk >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-wrk: wrk is missing and apt-get is not available; install wrk yourself" >&2
    exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure-wrk: wrk is missing; run as root: apt-get install -y wrk" >&2
        exit 1
    fi
fi
$SUDO apt-get install -y --no-install-recommends wrk >/dev/null 2>&1 || {
    $SUDO apt-get update >/dev/null
    $SUDO apt-get install -y --no-install-recommends wrk >/dev/null
}
command -v wrk >/dev/null 2>&1
