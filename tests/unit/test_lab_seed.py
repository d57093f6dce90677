"""The lab seed's pure parts: names, keys, the decision what to do, the helpers' scripts, the outcome line."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from stack import lab, lab_seed
from stack.lab_seed import SeedStep


def test_key_follows_the_image_ids_not_their_order() -> None:
    k = lab_seed.seed_key("sha256:lab", "sha256:node")
    assert len(k) == 12 and k == lab_seed.seed_key("sha256:lab", "sha256:node")
    assert k != lab_seed.seed_key("sha256:node", "sha256:lab")
    assert k != lab_seed.seed_key("sha256:lab", "sha256:node2")  # a rebuilt node image: a new seed


def test_names_never_collide_with_a_labs_and_carry_no_lab_label() -> None:
    k = lab_seed.seed_key("a", "b")
    assert lab_seed.seed_volume(k) == f"pgha-lab-seed-{k}"
    assert lab_seed.seed_maker(k) == f"pgha-lab-seed-{k}-make"
    # A lab's volumes end in -docker and its containers in -h<i>: a lab named seed-<k> stays apart.
    assert lab_seed.seed_volume(k) not in {lab.volume_name(f"seed-{k}", "h1"), lab.container_name(f"seed-{k}", "h1")}
    assert lab_seed.seed_maker(k) not in {lab.container_name(f"seed-{k}", f"h{i}") for i in range(1, lab.MAX_HOSTS + 1)}
    # `lab down` and the tests' sweeps go by label pgha.lab=<name>: the seed is not one of them.
    assert lab_seed.LABEL_SEED != "pgha.lab" and lab_seed.LABEL_SEED_NODE != "pgha.lab"


@pytest.mark.parametrize(("exists", "age", "step"), [
    (False, None, SeedStep.MAKE),
    (True, None, SeedStep.USE),
    (True, 20.0, SeedStep.WAIT),  # another run's maker at work: its seed is not complete yet
    (False, 20.0, SeedStep.WAIT),
    (True, lab_seed.SEED_STALE_SECONDS + 1, SeedStep.CLEAR),  # a crashed run's maker
    (False, lab_seed.SEED_STALE_SECONDS + 1, SeedStep.CLEAR),
])
def test_seed_step(exists: bool, age: float | None, step: SeedStep) -> None:
    assert lab_seed.seed_step(exists, age) is step


def test_only_other_image_pairs_seeds_are_stale() -> None:
    vols = {"pgha-lab-seed-aaa": "aaa", "pgha-lab-seed-bbb": "bbb", "pgha-lab-seed-ccc": "ccc"}
    assert lab_seed.stale_seeds(vols, "bbb") == ["pgha-lab-seed-aaa", "pgha-lab-seed-ccc"]
    assert lab_seed.stale_seeds({"pgha-lab-seed-bbb": "bbb"}, "bbb") == []


def _sh(script: str) -> int:
    return subprocess.run(["/bin/sh", "-c", script], check=False, capture_output=True).returncode


def test_copy_refuses_a_seed_without_its_marker_and_a_used_volume(tmp_path: Path) -> None:
    seed, host = tmp_path / "seed", tmp_path / "host"
    seed.mkdir()
    host.mkdir()
    (seed / "image").mkdir()
    (seed / "image" / "repositories.json").write_text("{}")
    script = lab_seed.copy_script(str(seed), str(host))
    assert _sh(script) == lab_seed.COPY_NO_SEED  # a half-made seed is never copied
    assert list(host.iterdir()) == []
    assert _sh(lab_seed.finish_script(str(seed))) == 0
    assert (seed / lab_seed.SEED_MARKER).is_file()
    (host / "containers").mkdir()
    assert _sh(script) == lab_seed.COPY_NOT_EMPTY  # an engine's own directory is never overwritten
    (host / "containers").rmdir()
    assert _sh(script) == 0
    assert (host / "image" / "repositories.json").read_text() == "{}"
    assert not (host / lab_seed.SEED_MARKER).exists()  # the copy is an engine's directory, not a seed


def test_finish_drops_the_engine_id_and_writes_the_marker_last(tmp_path: Path) -> None:
    (tmp_path / "engine-id").write_text("x")
    script = lab_seed.finish_script(str(tmp_path))
    assert script.rindex(lab_seed.SEED_MARKER) > script.index("engine-id")
    assert _sh(script) == 0
    assert not (tmp_path / "engine-id").exists() and (tmp_path / lab_seed.SEED_MARKER).exists()


def test_copy_failure_reads() -> None:
    assert "incomplete" in lab_seed.copy_failure(lab_seed.COPY_NO_SEED, "")
    assert "not empty" in lab_seed.copy_failure(lab_seed.COPY_NOT_EMPTY, "")
    assert lab_seed.copy_failure(1, "cp: error writing 'x': No space left on device\n") == (
        "cp exited 1: cp: error writing 'x': No space left on device")


def test_image_outcome() -> None:
    hosts = ["h1", "h2", "h3"]
    assert lab_seed.image_outcome(hosts, {"h1": "", "h2": "", "h3": ""}, {}) == (
        "node image: h1 from the seed, h2 from the seed, h3 from the seed")
    line = lab_seed.image_outcome(hosts, {"h1": "", "h2": "the seed is incomplete (no marker)"},
                                  {"h2": True, "h3": True})
    assert line == ("node image: h1 from the seed, h2 loaded (the seed is incomplete (no marker)), h3 loaded")
    assert lab_seed.image_outcome(["h1"], {"h1": ""}, {"h1": True}) == (
        "node image: h1 loaded (absent after the seed's copy)")
    assert lab_seed.image_outcome(["h1"], {}, {"h1": False}) == "node image: h1 had it"  # a lab completed


def test_a_seed_without_its_marker_is_broken_other_failures_are_not() -> None:
    assert lab_seed.seed_broken({"h1": "", "h2": lab_seed.copy_failure(lab_seed.COPY_NO_SEED, "")})
    assert not lab_seed.seed_broken({"h1": "", "h2": lab_seed.copy_failure(lab_seed.COPY_NOT_EMPTY, "")})
    assert not lab_seed.seed_broken({"h1": lab_seed.copy_failure(1, "cp: No space left on device")})
    assert not lab_seed.seed_broken({})
