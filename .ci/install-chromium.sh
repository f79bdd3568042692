#!/usr/bin/env bash
# Install headless Chromium for tests/viz/test_dashboard.py (the offline dashboard render test).
#
# Debian/Ubuntu-with-apt: installs the Debian package `chromium` (about 100 MB with its
# dependencies) when /usr/bin/chromium is missing. Idempotent: does nothing if it is installed.
# Set NOPELENS_CHROMIUM=/path/to/chrome to make the test use another Chromium or Chrome binary.
set -euo pipefail

if [ -x /usr/bin/chromium ]; then
    echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null || echo 'chromium') already installed"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-chromium: apt-get not found; install Chromium yourself and set NOPELENS_CHROMIUM" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium
echo "install-chromium: $(/usr/bin/chromium --version 2>/dev/null)"
