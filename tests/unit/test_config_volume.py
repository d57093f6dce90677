"""Many hosts: config files pushed into volumes through the engine API (tar, decisions, engine calls; mocks only)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from stack.spec import ClusterSpec, parse_spec
from stack.topology import ContainerDef
from tasks import config_volume as cv
from tasks import docker_hosts
from tasks.docker_engine import Engine, Outcome
from tasks.host.state import write_private

HOSTS = [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"} for i in (1, 2, 3)]
BASE: dict[str, Any] = {"scope": "many", "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                        "backup": {"enabled": False}, "fencing": False}
SECRET = "s3cr3t-password-value"


def _dir(tmp_path: Path) -> Path:
    d = tmp_path / "config" / "pg-1"
    write_private(d / "patroni.yml", f"password: {SECRET}\n")
    write_private(d / "tls" / "ca.crt", "CA\n")
    write_private(d / "pgbackrest" / "node.conf", "[global]\n")
    return d


def _members(tar: bytes) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(tar)) as t:
        return {m.name: m for m in t.getmembers()}


# ---- the tar and the decisions (pure) ----

def test_tar_has_the_state_dirs_layout_root_owned_0600_files_0700_dirs_manifest_last(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    (d / "patroni.yml.tmp").write_text("half written")
    snap = cv.snapshot(d)
    m = _members(snap.tar)
    assert list(m)[-1] == cv.MANIFEST
    assert set(m) == {"tls", "pgbackrest", "patroni.yml", "tls/ca.crt", "pgbackrest/node.conf", cv.MANIFEST}
    for name, ti in m.items():
        assert (ti.uid, ti.gid, ti.uname, ti.gname) == (0, 0, "root", "root")
        assert ti.mode == (0o700 if ti.isdir() else 0o600), name
    assert snap.files == ("patroni.yml", "pgbackrest/node.conf", "tls/ca.crt")
    manifest = json.loads(cv.read_member(snap.tar, cv.MANIFEST) or b"")
    assert manifest == {"digest": snap.digest, "files": list(snap.files)}
    assert SECRET not in json.dumps(manifest)  # the manifest names files, never their content
    assert cv.read_member(snap.tar, "patroni.yml") == f"password: {SECRET}\n".encode()


def test_digest_covers_names_and_content_not_time(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    a, b = cv.snapshot(d, now=1), cv.snapshot(d, now=2)
    assert a.digest == b.digest and a.tar != b.tar
    write_private(d / "tls" / "ca.crt", "CA2\n")
    changed = cv.snapshot(d).digest
    assert changed != a.digest
    (d / "tls" / "ca.crt").rename(d / "tls" / "ca2.crt")  # same content, another name
    assert cv.snapshot(d).digest not in (a.digest, changed)


def test_push_decisions(tmp_path: Path) -> None:
    d = _dir(tmp_path)
    snap = cv.snapshot(d)
    assert cv.plan(snap, None) == cv.Plan(True, (), "the volume holds no pushed config")
    assert cv.plan(snap, b"not json").push
    same = json.dumps({"digest": snap.digest, "files": list(snap.files)}).encode()
    assert cv.plan(snap, same) == cv.Plan(False, (), "unchanged")
    # A file removed from the state dir (backup.conf once a repository host takes the backups) goes from the volume.
    old = json.dumps({"digest": "x", "files": [*snap.files, "pgbackrest/backup.conf", "../escape", "/abs", 3]})
    p = cv.plan(snap, old.encode())
    assert p.push and p.remove == ("pgbackrest/backup.conf",) and p.reason == "changed"


def test_a_missing_directory_is_an_empty_push(tmp_path: Path) -> None:
    snap = cv.snapshot(tmp_path / "absent")
    assert snap.files == () and list(_members(snap.tar)) == [cv.MANIFEST]


def test_names() -> None:
    assert cv.volume_name("many-pg-1") == "many-pg-1-etc"
    assert cv.helper_name("many-pg-1") == "many-pg-1-etc-push"


# ---- the engine calls (a fake docker client) ----

class FakeContainer:
    def __init__(self, name: str, mounts: list[dict[str, Any]], files: dict[str, bytes] | None = None,
                 status: str = "running", config_hash: str = "h", image: str = "pgha/node:pg17-x",
                 role: str = "patroni") -> None:
        self.name, self.status, self.id = name, status, name
        self.labels = {"pgha.cluster": "many", "pgha.role": role, "pgha.member": name, "pgha.config": config_hash}
        self.attrs: dict[str, Any] = {"Mounts": mounts, "Config": {"Image": image}}
        self.image = type("I", (), {"tags": [image]})()
        self.files = files or {}
        self.put: list[tuple[str, bytes]] = []
        self.removed = self.started = False

    def get_archive(self, path: str) -> tuple[Any, dict[str, Any]]:
        if path not in self.files:
            raise docker.errors.NotFound("no such file")
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as t:
            ti = tarfile.TarInfo(Path(path).name)
            ti.size = len(self.files[path])
            t.addfile(ti, io.BytesIO(self.files[path]))
        return iter([buf.getvalue()]), {}

    def put_archive(self, path: str, data: bytes) -> bool:
        self.put.append((path, data))
        return True

    def start(self) -> None:
        self.started = True

    def wait(self, timeout: int) -> dict[str, int]:
        return {"StatusCode": 0}

    def remove(self, force: bool = False, v: bool = False) -> None:
        self.removed = True


class FakeClient:
    def __init__(self, containers: dict[str, FakeContainer] | None = None) -> None:
        self.by_name = containers or {}
        self.created: list[dict[str, Any]] = []
        self.volumes_made: list[tuple[str, dict[str, str]]] = []
        outer = self

        class Containers:
            def get(self, name: str) -> FakeContainer:
                ct = outer.by_name.get(name)
                if ct is None or ct.removed:
                    raise docker.errors.NotFound(name)
                return ct

            def create(self, image: str, **kw: Any) -> FakeContainer:
                outer.created.append({"image": image, **kw})
                ct = FakeContainer(kw["name"], kw.get("mounts") or [])
                outer.by_name[kw["name"]] = ct
                return ct

        class Volumes:
            def get(self, name: str) -> Any:
                for n, lab in outer.volumes_made:
                    if n == name:
                        return type("V", (), {"attrs": {"Labels": lab}})()
                raise docker.errors.NotFound(name)

            def create(self, name: str, labels: dict[str, str]) -> None:
                outer.volumes_made.append((name, labels))

        self.containers, self.volumes = Containers(), Volumes()


def _engine(client: FakeClient, push: bool) -> Engine:
    e = Engine("h1", config_volumes=push)
    e._client = client  # type: ignore[assignment]
    return e


def _def(conf: Path, config_hash: str = "h") -> ContainerDef:
    return ContainerDef(scope="many", role="patroni", member="pg-1", name="many-pg-1", image="pgha/node:pg17-x",
                        network="many-net", command=[], config_hash=config_hash, config_dir=str(conf))


def _etc_volume(name: str = "many-pg-1") -> list[dict[str, Any]]:
    return [{"Destination": "/etc/pgha", "Type": "volume", "Name": cv.volume_name(name)}]


def test_a_host_engine_fills_the_volume_through_a_helper_then_creates_the_member_on_it(tmp_path: Path) -> None:
    conf = _dir(tmp_path)
    client = FakeClient()
    assert _engine(client, True).ensure_container(_def(conf)) == Outcome.CREATED
    helper, member = client.created
    assert helper["name"] == "many-pg-1-etc-push" and helper["network_mode"] == "none"
    assert [(m["Target"], m["Source"], m["Type"], m["ReadOnly"]) for m in helper["mounts"]] == [
        ("/etc/pgha", "many-pg-1-etc", "volume", False)]
    assert helper["command"] == [] and client.by_name["many-pg-1-etc-push"].removed
    assert not client.by_name["many-pg-1-etc-push"].started  # nothing to remove: never started
    path, tar = client.by_name["many-pg-1-etc-push"].put[0]
    assert path == "/etc/pgha" and cv.read_member(tar, "patroni.yml") == f"password: {SECRET}\n".encode()
    # The secret travels only inside the archive: not in argv, environment or labels.
    assert SECRET not in repr({k: v for k, v in helper.items()})
    assert [(m["Target"], m["Source"], m["Type"], m["ReadOnly"]) for m in member["mounts"]] == [
        ("/etc/pgha", "many-pg-1-etc", "volume", True)]
    assert client.volumes_made == [("many-pg-1-etc", {"pgha.cluster": "many", "pgha.role": "patroni",
                                                      "pgha.member": "pg-1", cv.LABEL_ETC: "many-pg-1"})]


def test_an_unchanged_member_costs_one_read_and_no_helper(tmp_path: Path) -> None:
    conf = _dir(tmp_path)
    snap = cv.snapshot(conf)
    manifest = json.dumps({"digest": snap.digest, "files": list(snap.files)}).encode()
    ct = FakeContainer("many-pg-1", _etc_volume(), {f"/etc/pgha/{cv.MANIFEST}": manifest})
    client = FakeClient({"many-pg-1": ct})
    e = _engine(client, True)
    e.connect = lambda name, net: False  # type: ignore[method-assign]
    assert e.ensure_container(_def(conf)) == Outcome.UNCHANGED
    assert client.created == []


def test_a_changed_file_is_pushed_to_the_running_member_and_stale_files_removed(tmp_path: Path) -> None:
    conf = _dir(tmp_path)
    old = json.dumps({"digest": "old", "files": ["patroni.yml", "pgbackrest/backup.conf"]}).encode()
    ct = FakeContainer("many-pg-1", _etc_volume(), {f"/etc/pgha/{cv.MANIFEST}": old})
    client = FakeClient({"many-pg-1": ct})
    e = _engine(client, True)
    assert e.push_config("many", "patroni", "pg-1", "many-pg-1", "pgha/node:pg17-x", str(conf))
    helper = client.created[0]
    assert helper["entrypoint"] == ["rm", "-f", "--"] and helper["command"] == ["/etc/pgha/pgbackrest/backup.conf"]
    assert client.by_name["many-pg-1-etc-push"].started and client.by_name["many-pg-1-etc-push"].removed


def test_a_member_still_on_a_bind_mount_is_pushed_and_recreated_on_its_volume(tmp_path: Path) -> None:
    conf = _dir(tmp_path)
    ct = FakeContainer("many-pg-1", [{"Destination": "/etc/pgha", "Type": "bind", "Source": str(conf)}])
    client = FakeClient({"many-pg-1": ct})
    assert _engine(client, True).ensure_container(_def(conf)) == Outcome.RECREATED
    assert [c["name"] for c in client.created] == ["many-pg-1-etc-push", "many-pg-1"]


def test_the_local_engine_still_bind_mounts_and_pushes_nothing(tmp_path: Path) -> None:
    conf = _dir(tmp_path)
    client = FakeClient()
    assert _engine(client, False).ensure_container(_def(conf)) == Outcome.CREATED
    (member,) = client.created
    assert [(m["Target"], m["Source"], m["Type"], m["ReadOnly"]) for m in member["mounts"]] == [
        ("/etc/pgha", str(conf), "bind", True)]
    assert client.volumes_made == []


def test_host_engines_push_and_the_local_one_does_not() -> None:
    s = parse_spec({**BASE, "hosts": HOSTS})
    assert all(e.config_volumes for e in docker_hosts.engines(s).all())
    assert not docker_hosts.engines(ClusterSpec(scope="solo")).default.config_volumes


def test_sync_decisions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    calls: list[tuple[str, str]] = []

    def fake_push(self: Engine, scope: str, role: str, member: str, name: str, image: str, local_dir: str,
                  current: Any = None) -> bool:
        calls.append((self.name, name))
        return True

    present = {"h1", "h3"}

    def fake_find(self: Engine, name: str) -> FakeContainer | None:
        return FakeContainer(name, _etc_volume(name)) if self.name in present else None

    monkeypatch.setattr(Engine, "push_config", fake_push)
    monkeypatch.setattr(Engine, "find_container", fake_find)
    # One engine: the member bind-mounts the state dir, nothing to push (and no engine is asked).
    assert docker_hosts.sync_config(ClusterSpec(scope="solo"), "pg-1") == []
    assert calls == []
    s = parse_spec({**BASE, "hosts": HOSTS})
    # HAProxy runs on every host: pushed where its container exists (h2's is being created, it gets them then).
    assert docker_hosts.sync_config(s, s.haproxy_member) == ["h1", "h3"]
    assert calls == [("h1", s.container(s.haproxy_member)), ("h3", s.container(s.haproxy_member))]
    calls.clear()
    assert docker_hosts.sync_config(s, "pg-2") == [] and calls == []  # pg-2 is on h2, no container there yet
    assert docker_hosts.sync_config(s, "pg-3") == ["h3"] and calls == [("h3", s.container("pg-3"))]


def test_down_removes_config_volumes_even_without_volumes() -> None:
    seen: list[Any] = []

    class C:
        class containers:  # noqa: N801
            @staticmethod
            def list(**kw: Any) -> list[Any]:
                return []

        class networks:  # noqa: N801
            @staticmethod
            def list(**kw: Any) -> list[Any]:
                return []

        class volumes:  # noqa: N801
            @staticmethod
            def list(filters: dict[str, Any]) -> list[Any]:
                seen.append(filters)
                return []

    e = Engine("h1", config_volumes=True)
    e._client = C()  # type: ignore[assignment]
    e.remove_labelled("many", volumes=False)
    e.remove_labelled("many", volumes=True)
    ephemeral = {"label": ["pgha.cluster=many", "pgha.ephemeral"]}  # tmpfs volumes go with the containers
    assert seen == [{"label": ["pgha.cluster=many", cv.LABEL_ETC]}, ephemeral, {"label": ["pgha.cluster=many"]}]
    seen.clear()
    local = Engine("local")
    local._client = C()  # type: ignore[assignment]
    local.remove_labelled("many", volumes=False)  # the single-engine path: no data volume is even listed
    assert seen == [ephemeral]


def test_lab_hosts_share_nothing_of_the_state_dir_but_their_socket(monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    """The lab proves the push path: a lab host sees no config dir of pgha's (only its engine's socket)."""
    from stack import lab as plan
    from tasks import docker_lab

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path / "state"))
    host = plan.LabHost(name="h1", container="pgha-lab-t-h1", docker="unix:///x", address="10.213.0.11",
                        rw_port=27100, ro_port=27101)
    run = docker_lab.host_run("t", host, "pgha/lab:x", "unix")
    binds = {m.target: m.source for m in run.mounts if m.kind == "bind"}
    state = str(tmp_path / "state")
    assert binds == {"/sys/fs/cgroup": "/sys/fs/cgroup", docker_lab.SOCKET_IN_HOST: f"{state}/labs/t/h1"}


def test_haproxy_reload_syncs_then_reloads_every_hosts_haproxy(monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import haproxy
    from tasks.node_exec import ExecResult, NodeExec

    order: list[str] = []
    monkeypatch.setattr(haproxy, "sync_config", lambda spec, member: order.append(f"sync {member}") or [])

    def run(self: NodeExec, cmd: list[str], user: str | None = None, timeout: int = 10,
            retries_if_lost: int = 0) -> ExecResult:
        order.append(f"{self.engine.name}: {cmd[0]}")
        return ExecResult(0, "", "")

    monkeypatch.setattr(NodeExec, "run", run)
    haproxy.reload(parse_spec({**BASE, "hosts": HOSTS}))
    assert order == ["sync haproxy", *(f"h{i}: {c}" for i in (1, 2, 3) for c in ("haproxy", "install", "kill"))]
    order.clear()
    haproxy.reload(ClusterSpec(scope="solo"))  # one engine: one HAProxy, as before
    assert order == ["sync haproxy", "local: haproxy", "local: install", "local: kill"]
