#!/usr/bin/env bash
# Make sure a headless Chromium is there for the UI test (tests/integration/test_operator.py).
# Debian's package, driven by Playwright from PyPI with executable_path=/usr/bin/chromium: no
# browser download. On Debian as root: installs it when missing. Elsewhere: says what to do.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # `make test` runs the host's package installs side by side with the image builds: one apt at a time.
  exec 9>/var/lock/pgha-apt.lock
  flock 9
  echo "pgha: installing chromium from Debian (the UI test drives it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "pgha: the UI test needs /usr/bin/chromium: sudo apt-get install -y chromium" >&2
  exit 1
fi
