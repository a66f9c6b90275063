#!/usr/bin/env bash
# Debian's Chromium for the Playwright browser check (tests/e2e/test_browser.py).
# Playwright's own browser download cannot work here (only package registries are reachable), so the test
# drives the distribution's build at /usr/bin/chromium. Idempotent: does nothing when it is already there.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: /usr/bin/chromium missing and no apt-get; the browser test will skip" >&2
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null
/usr/bin/chromium --version
