#!/bin/sh
# pgha-entrypoint ROLE [ARGS...]: start one pgha role as its own unprivileged user.
#
# Config files (with passwords) are bind-mounted read-only under /etc/pgha by the host,
# owned by root with mode 0600; the role's user cannot read them there, so they are
# copied once into a private tmpfs-like directory owned by that user. Passwords never
# travel through environment variables.
set -eu
role="${1:-}"
[ $# -gt 0 ] && shift

case "$role" in
  etcd)
    # The package's /var/lib/etcd is etcd's 0700: root without DAC_OVERRIDE (dropped) cannot
    # look inside, so it only takes the directory over and etcd makes its data dir itself.
    chown etcd:etcd /var/lib/etcd
    setpriv --reuid=etcd --regid=etcd --init-groups install -d -m 0700 /var/lib/etcd/data
    exec setpriv --reuid=etcd --regid=etcd --init-groups etcd "$@"
    ;;
  patroni)
    install -d -o postgres -g postgres -m 0700 /run/pgha
    install -o postgres -g postgres -m 0600 /etc/pgha/patroni.yml /run/pgha/patroni.yml
    # /run/pgha is a tmpfs, empty again after every stop/start: pgBackRest's files (written by
    # tasks/pgbackrest.py once backups are set up) come back here, or archive-push would fail
    # until the next backup reinstalled them.
    if [ -d /etc/pgha/pgbackrest ]; then
      install -d -o postgres -g postgres -m 0700 /run/pgha/pgbackrest
      for f in /etc/pgha/pgbackrest/*; do
        if [ -f "$f" ]; then install -o postgres -g postgres -m 0600 "$f" /run/pgha/pgbackrest/; fi
      done
    fi
    chown postgres:postgres /var/lib/postgresql/data
    chmod 0700 /var/lib/postgresql/data
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    cd /var/lib/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql patroni /run/pgha/patroni.yml
    ;;
  haproxy)
    # HAProxy runs as the haproxy user (every port it binds is above 1024, so it needs no
    # capability). The runtime API socket (`stats socket` in haproxy.cfg) lives in
    # /run/haproxy; the config is copied into /run/pgha (a tmpfs, root's, 0711) as a file
    # haproxy reads, and `tasks/haproxy.py` refreshes that copy before a reload (SIGUSR2).
    install -d -o haproxy -g haproxy -m 0700 /run/haproxy
    install -d -m 0711 /run/pgha
    install -o haproxy -g haproxy -m 0600 /etc/pgha/haproxy.cfg /run/pgha/haproxy.cfg
    if [ -f /etc/pgha/tls/ca.crt ]; then  # spec.tls: the CA its health checks verify Patroni's API with
      # root keeps the directory (no DAC_OVERRIDE: it could not write into haproxy's own)
      install -d -m 0711 /run/pgha/tls
      # 0644: a CA certificate is public; root's `haproxy -c` (tasks/haproxy.py) reads it too
      install -o haproxy -g haproxy -m 0644 /etc/pgha/tls/ca.crt /run/pgha/tls/ca.crt
    fi
    exec setpriv --reuid=haproxy --regid=haproxy --init-groups haproxy -W -db -f /run/pgha/haproxy.cfg
    ;;
  pooler)
    # PgBouncer as postgres: its config and the SCRAM secrets file (0600, root) are copied
    # into a directory only postgres reads; the admin console's Unix socket lets `docker exec
    # -u postgres psql` in without a password (same UID as the running process).
    # /run/pgha is a tmpfs (empty after every restart): root (without DAC_OVERRIDE) owns it
    # while it copies, then hands it to postgres.
    chown root:root /run/pgha && chmod 0700 /run/pgha
    install -o postgres -g postgres -m 0600 /etc/pgha/pgbouncer.ini /run/pgha/pgbouncer.ini
    install -o postgres -g postgres -m 0600 /etc/pgha/userlist.txt /run/pgha/userlist.txt
    chown postgres:postgres /run/pgha
    install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups env HOME=/var/lib/postgresql pgbouncer /run/pgha/pgbouncer.ini
    ;;
  *)
    echo "pgha-entrypoint: unknown role '$role' (expected etcd, patroni, haproxy or pooler)" >&2
    exit 64
    ;;
esac
