#!/usr/bin/env bash
# Make sure Prometheus and promtool are there: the unit tests run `promtool check rules` and
# `promtool test rules` on deployments/prometheus/, and tests/integration/test_tls.py starts a
# real Prometheus that scrapes pgha's exporter. Debian's package (bookworm: 2.42); its service
# is not needed (the test starts its own on a loopback port). On Debian as root: installs it
# when missing. Elsewhere: says what to do.
set -euo pipefail
if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # `make test` runs the host's package installs side by side with the image builds: one apt at a time.
  exec 9>/var/lock/pgha-apt.lock
  flock 9
  echo "pgha: installing prometheus from Debian (promtool and the scrape test use it)" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
else
  echo "pgha: the tests need promtool and prometheus: sudo apt-get install -y prometheus" >&2
  exit 1
fi
