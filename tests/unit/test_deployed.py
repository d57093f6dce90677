"""A deployment run takes the stored spec of the scope it names; a forged spec parameter is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.steps import deployment
from stack.deployed import deployment_spec, differing_fields, restore_target_refusal
from stack.errors import UsageError
from stack.spec import ClusterSpec

STORED = ClusterSpec(scope="prod", nodes=2, etcd_members=1, ports={"rw": 29150, "ro": 29151, "stats": 29152})


def test_a_spec_that_names_only_the_scope_runs_with_the_stored_one() -> None:
    assert deployment_spec(ClusterSpec(scope="prod"), STORED) is STORED
    assert deployment_spec(STORED.model_copy(), STORED) is STORED  # the same spec, sent whole


@pytest.mark.parametrize(("forged", "field"), [
    ({"image": "attacker/root:latest"}, "image"),
    ({"nodes": 3}, "nodes"),
    ({"base_image": "attacker/base"}, "base_image"),
    ({"postgres_parameters": {"log_min_duration_statement": "0"}}, "postgres_parameters"),
])
def test_a_forged_field_is_refused_naming_it(forged: dict[str, object], field: str) -> None:
    given = ClusterSpec.model_validate({**STORED.model_dump(mode="json"), **forged})
    with pytest.raises(ValueError, match=f"sets .*{field}.* differently: change the spec with the CLI"):
        deployment_spec(given, STORED)


def test_without_a_stored_spec_a_run_is_refused_unless_it_creates_from_the_defaults() -> None:
    with pytest.raises(ValueError, match="^no cluster 'new' was brought up on this host: .*nothing changed$"):
        deployment_spec(ClusterSpec(scope="new"), None)
    assert deployment_spec(ClusterSpec(scope="new"), None, creates=True) == ClusterSpec(scope="new")
    for creates in (False, True):
        with pytest.raises(ValueError, match="no cluster 'new' was brought up on this host; its spec parameter sets nodes"):
            deployment_spec(ClusterSpec(scope="new", nodes=2), None, creates)


def test_restore_into_may_change_the_scope_and_ports_only() -> None:
    into = STORED.model_copy(update={"scope": "prod-copy", "ports": STORED.ports.model_copy(update={"rw": 29160})})
    assert restore_target_refusal(into, STORED) is None
    bad = into.model_copy(update={"nodes": 5})
    assert "sets nodes differently" in (restore_target_refusal(bad, STORED) or "")
    assert differing_fields(bad, STORED, ignore=("scope", "ports")) == ["nodes"]


def test_outside_a_deployment_run_the_spec_is_the_caller_s(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    forged = STORED.model_copy(update={"nodes": 3})
    monkeypatch.setattr(deployment, "in_deployment_run", lambda: False)
    assert deployment.pinned_spec(forged) is forged
    monkeypatch.setattr(deployment, "in_deployment_run", lambda: True)
    with pytest.raises(UsageError, match="no cluster 'prod' was brought up on this host"):
        deployment.pinned_spec(forged)
