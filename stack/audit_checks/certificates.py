"""The audit's checks of TLS (`tls.*`): the certificates' and the cluster CA's expiry."""

from __future__ import annotations

from stack import tls
from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="tls.cert_expiry",
        component="TLS",
        target="the cluster (its scope)",
        checks="the member, client or pooler certificate nearest to expiry (in the state directory)",
        warn="it expires within `tls.expiry_warn_days`",
        critical="it has expired, or the certificates cannot be read",
        thresholds=("tls.expiry_warn_days", "tls.renew_within_days", "tls.days"),
        only_when="`tls.enabled`",
        means="At expiry every TLS connection fails: etcd, Patroni's API, replication, clients. The "
              "`certs-renew/daily` deployment renews them `tls.renew_within_days` before expiry, earlier than "
              "this warning: a warning means that renewal did not run or failed.",
        steps=("`pgha certs renew` renews them now if they are due (`pgha certs rotate` renews them whatever "
               "their age): new member, client and pooler certificates from the cluster's CA, installed with reloads "
               "(no restart, no switchover).",
               "Then find out why the scheduled renewal did not: `pgha server status` (is the worker running?), "
               "and the `certs-renew` runs in the Prefect UI.",
               "Certificates that cannot be read: `pgha up` creates the missing ones."),
        fixes=("pgha certs renew", "pgha certs rotate", "pgha up"),
    ),
    Check(
        name="tls.ca_expiry",
        component="TLS",
        target="the cluster (its scope)",
        checks="the cluster's own CA (`ca.crt` in the state directory), which signs every member and client "
               "certificate and which clients trust (`sslrootcert`)",
        warn=f"it expires within {tls.CA_WARN_DAYS} days",
        critical=f"it expires within {tls.CA_CRITICAL_DAYS} days, or there is none",
        only_when="`tls.enabled`",
        means=f"The CA is made for {tls.CA_DAYS // 365} years by the first `pgha up`, and neither a rotation nor "
              "the renewal replaces it: when it expires no certificate it signed verifies. It is reported a year "
              "ahead because replacing it changes what every client must trust.",
        steps=("Plan a new cluster: `pgha restore --into NEW-SCOPE` creates "
               "a cluster with a new CA from the same data; point clients at it with its `pgha dsn`.",
               "Then take the old cluster down."),
        fixes=("pgha restore", "pgha down"),
    ),
)
