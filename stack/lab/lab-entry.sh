#!/bin/sh
# The lab host's engine: its socket in /run/lab (a directory of the real machine, so pgha
# reaches this engine through it), its data on the /var/lib/docker volume (overlay2 works there).
# After `docker kill` + `docker start` (a machine that died and boots again) the stale pid file
# and socket are removed first. Arguments are more dockerd flags: `--engine tcp` adds a TLS
# listener (-H tcp://0.0.0.0:2376 --tlsverify and the paths of its mounted, read-only files).
set -eu
rm -f /run/lab/docker.sock /var/run/docker.pid
exec dockerd -H unix:///run/lab/docker.sock --storage-driver=overlay2 --pidfile=/var/run/docker.pid "$@"
