"""One module per external system pgha talks to (Docker, etcd, Patroni, HAProxy, PostgreSQL)."""
