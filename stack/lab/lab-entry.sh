#!/bin/sh
# The lab host's engine: its socket in /run/lab (a directory of the real machine, so pgha
# reaches this engine through it), its data on the /var/lib/docker volume (overlay2 works there).
# After `docker kill` + `docker start` (a machine that died and boots again) the stale pid file
# and socket are removed first. Arguments are more dockerd flags: `--engine tcp` adds a TLS
# listener (-H tcp://0.0.0.0:2376 --tlsverify and the paths of its mounted, read-only files).
# `--engine ssh` mounts the host key and authorized_keys in /etc/pgha-lab/ssh: they are installed
# root-owned 0600 (sshd's StrictModes) and sshd starts; `docker` run over ssh (dial-stdio) finds the
# engine at the default /var/run/docker.sock, a link to the lab's socket.
set -eu
rm -f /run/lab/docker.sock /var/run/docker.pid /run/sshd.pid
ln -sf /run/lab/docker.sock /run/docker.sock
if [ -f /etc/pgha-lab/ssh/ssh_host_ed25519_key ]; then
    install -m 600 -o root -g root /etc/pgha-lab/ssh/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
    install -m 600 -o root -g root /etc/pgha-lab/ssh/authorized_keys /etc/ssh/pgha_authorized_keys
    mkdir -p -m 755 /run/sshd
    /usr/sbin/sshd -f /etc/ssh/pgha_sshd_config -E /var/log/sshd.log
fi
exec dockerd -H unix:///run/lab/docker.sock --storage-driver=overlay2 --pidfile=/var/run/docker.pid "$@"
