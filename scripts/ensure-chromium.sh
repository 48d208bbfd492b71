#!/bin/sh
# Make sure Debian's Chromium is present for the browser tests (tests marked `browser`).
# Idempotent: does nothing when /usr/bin/chromium exists. We never run `playwright install`: the tests
# drive the distribution's Chromium (executable_path=/usr/bin/chromium), which gets security updates.
# Without root (or without apt-get) it only says what is missing; the browser tests then skip with that reason.
set -eu
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: $CHROMIUM is missing and apt-get is not available; browser tests will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        SUDO="sudo -n"
    else
        echo "ensure-chromium: $CHROMIUM is missing; run 'apt-get install -y chromium' as root (browser tests will be skipped)" >&2
        exit 0
    fi
fi
echo "ensure-chromium: installing chromium with apt-get" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium
