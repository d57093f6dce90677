#!/usr/bin/env bash
# Make sure a Docker engine answers, and that what image builds need is installed.
#
# On Debian as root: installs docker.io and debootstrap when missing, starts dockerd in the
# background (coping with a stale pid file left by a killed daemon) and waits for it.
# Elsewhere: says what to install and fails.
set -euo pipefail

log=${PGHA_DOCKERD_LOG:-/var/log/pgha-dockerd.log}
say() { echo "pgha: $*" >&2; }

need_pkgs=()
command -v dockerd >/dev/null 2>&1 || need_pkgs+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need_pkgs+=(debootstrap)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)  # ssh:// engines (the lab's --engine ssh)
if ((${#need_pkgs[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing ${need_pkgs[*]} from Debian"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  elif ! docker info >/dev/null 2>&1; then
    say "no Docker engine here: install Docker Engine (https://docs.docker.com/engine/install/) and start it, then retry"
    exit 1
  fi
fi

if docker info >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  say "the Docker engine is not running and starting it needs root: sudo systemctl start docker (or sudo dockerd)"
  exit 1
fi

# A killed dockerd leaves pid files behind; a new one refuses to start while they exist.
for pidfile in /var/run/docker.pid /var/run/docker/containerd/containerd.pid; do
  if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile" 2>/dev/null)" 2>/dev/null; then
    rm -f "$pidfile"
  fi
done

say "starting dockerd (log: $log)"
mkdir -p "$(dirname "$log")"
setsid dockerd >"$log" 2>&1 </dev/null &
for _ in $(seq 1 120); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
say "dockerd did not answer within 60 s; last lines of $log:"
tail -n 20 "$log" >&2
exit 1
