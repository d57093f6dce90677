"""Generations behind one name (stack/generations.py, tasks/host/generations.py): the serving spec,
colours that alternate, the order `down` removes both generations in, the pointer on the host."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stack import generations as gen
from stack import major
from stack.major import MajorState, Phase
from stack.spec import parse_spec
from tasks.host import generations as host_gen

USER = parse_spec({"scope": "life", "nodes": 2, "etcd_members": 1, "postgres_version": 15,
                   "ports": {"rw": 27800, "ro": 27801, "stats": 27802, "pool": 27803},
                   "upgrade": {"node_image": "pgha/node:pg15-security"}}, "unit")


def test_colours_alternate_and_names_never_grow() -> None:
    assert gen.other_generation("life") == "life-green"
    assert gen.other_generation("life-green") == "life"
    assert gen.base_of("life-green") == gen.base_of("life") == "life"
    assert gen.generations("life-green") == gen.generations("life") == ["life", "life-green"]
    green = major.green_spec(USER, 17)
    assert green.scope == "life-green" and green.ports.rw == 27810 and green.ports.pool == 27813
    serving = gen.serving_spec(USER, gen.Serving(generation="life-green", postgres_version=17))
    assert major.green_spec(serving, 17).scope == "life"  # the next upgrade builds `life` again


def test_serving_spec_is_the_green_on_the_clients_ports_and_idempotent() -> None:
    pointer = gen.Serving(generation="life-green", postgres_version=17)
    s = gen.serving_spec(USER, pointer)
    assert (s.scope, s.postgres_version, s.ports) == ("life-green", 17, USER.ports)
    assert s.upgrade.node_image is None and s.image is None and s.postgres_parameters["wal_level"] == "logical"
    assert gen.serving_spec(s, pointer) == s  # a resolved spec stays
    assert gen.serving_spec(USER, None) is USER  # no finished upgrade: the user's spec serves
    # The green of a second upgrade (`life` on 18) is that green's, not the user's: left alone.
    building = parse_spec({**USER.model_dump(mode="json"), "postgres_version": 17}, "unit")
    assert gen.serving_spec(building, pointer, ("life", 17)) is building
    assert gen.serving_spec(USER, pointer, ("life", 17)).scope == "life-green"  # the user's (15) is resolved


def test_serving_is_the_base_again_after_a_second_upgrade() -> None:
    pointer = gen.Serving(generation="life", postgres_version=17)
    s = gen.serving_spec(USER, pointer)
    assert (s.scope, s.postgres_version, s.ports.rw) == ("life", 17, 27800)


def test_describe_names_the_cluster() -> None:
    s = gen.serving_spec(USER, gen.Serving(generation="life-green", postgres_version=17))
    assert gen.describe("life", s) == "cluster life (generation life-green, PostgreSQL 17)"
    assert gen.describe("life", USER) == "cluster life (PostgreSQL 15)"


def test_down_removes_client_facing_containers_of_every_generation_first() -> None:
    steps = gen.teardown_steps("life-green")
    assert steps[:4] == [("life", "haproxy"), ("life-green", "haproxy"), ("life", "pooler"), ("life-green", "pooler")]
    assert steps[4:] == [("life", None), ("life-green", None)]


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    return tmp_path


def test_host_resolver_reads_the_pointer_and_the_serving_stored_spec(state: Path) -> None:
    assert host_gen.serving(USER) is USER
    serving = gen.serving_spec(USER, gen.Serving(generation="life-green", postgres_version=17))
    host_gen.write_pointer("life", serving)
    (state / "life-green").mkdir()
    (state / "life-green" / "spec.yaml").write_text(yaml.safe_dump(serving.model_dump(mode="json")))
    assert host_gen.serving(USER) == serving
    assert host_gen.stored_spec_file("life") == state / "life-green" / "spec.yaml"
    assert host_gen.stored_spec_file("other") == state / "other" / "spec.yaml"
    # A second upgrade in progress, from life-green to `life` on 17: that green's spec is left alone.
    st = MajorState(phase=Phase.ON_GREEN, target=17, source=17, green_scope="life")
    (state / "life-green" / "major-upgrade.json").write_text(st.model_dump_json())
    green = major.green_spec(serving, 17)
    assert host_gen.serving(green) is green
    assert host_gen.serving(USER) == serving


def test_clearing_a_generation_keeps_the_pointer(state: Path) -> None:
    host_gen.write_pointer("life", USER)
    for f in ("secrets.json", "major-upgrade.json", "tls/ca.crt", "tls/member.crt", "config/pg-1/patroni.yml"):
        (state / "life" / f).parent.mkdir(parents=True, exist_ok=True)
        (state / "life" / f).write_text("x")
    host_gen.clear_generation_dir("life", keep=("tls",))
    assert sorted(p.name for p in (state / "life").iterdir()) == ["serving.json", "tls"]
    assert sorted(p.name for p in (state / "life" / "tls").iterdir()) == ["ca.crt"]
    (state / "life-green").mkdir()
    (state / "life-green" / "secrets.json").write_text("x")
    host_gen.clear_generation_dir("life-green")
    assert not (state / "life-green").exists()


def test_a_spec_of_an_older_generation_follows_the_cluster(state: Path) -> None:
    first = gen.serving_spec(USER, gen.Serving(generation="life-green", postgres_version=17))
    host_gen.write_pointer("life", parse_spec({**first.model_dump(mode="json"), "scope": "life",
                                               "postgres_version": 17}, "unit"))
    # A deployment's parameter written while life-green served; `life` serves since the second finish.
    s = host_gen.serving(first)
    assert (s.scope, s.postgres_version, s.ports) == ("life", 17, USER.ports)
    (state / "life" / "spec.yaml").write_text(yaml.safe_dump(s.model_dump(mode="json")))
    assert host_gen.stored_spec_file("life-green") == state / "life" / "spec.yaml"
