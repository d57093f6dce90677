"""The audit's checks of the spec's declared roles and databases (`apps.drift`)."""

from __future__ import annotations

from stack.audit_checks.check import Check

CHECKS: tuple[Check, ...] = (
    Check(
        name="apps.drift",
        component="roles and databases",
        target="the declared roles and databases",
        checks="that every role and database of the spec's `roles:` and `databases:` exists on the primary as "
               "declared: login, connection limit, memberships, password, owner, extensions, schemas",
        warn="something differs from the spec (changed by hand, or missing), or the catalog could not be read",
        thresholds=("roles", "databases"),
        only_when="the spec declares `roles:` or `databases:`",
        means="Someone changed a declared role or database by hand (`ALTER ROLE`, `DROP EXTENSION`, a new "
              "password), or a restore brought back an older catalog. The row names each difference.",
        steps=("Read the differences in the row; if the change by hand was wanted, put it in the spec instead.",
               "Run `pgha up`: it restores what the spec declares and records it in the operations journal."),
        fixes=("pgha up",),
    ),
)
