"""Backup hardening with real parts: an encrypted repository, S3 over TLS, a safe in-place restore, archiving audit.

Two 2-node / 1-etcd clusters:
- `pgha-it-bh` (the local repository volume, encrypted by default): `pgbackrest info` reports
  the cipher and a backup's verified restore works through it; archiving broken for real (the
  repository made unwritable) is a critical audit row, healed it is ok again; an in-place
  restore whose WAL is missing fails before the cluster is touched: same containers, data
  intact, writes accepted, one line, exit != 0.
- `pgha-it-bh3` with an S3 repository on a local S3 server (Debian's moto in a container,
  HTTPS by HAProxy in front of it with a certificate from a test CA; the CA given as backup.s3.ca_file, the keys in the
  state directory's 0600 s3-credentials.json): backup + verified restore, encrypted too.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from stack import layout
from tests.integration.conftest import Cluster, make_cluster, pgha, remove_scope, running_cluster, up
from tests.integration.test_backup import ok, sql
from tests.support.s3_image import moto_image

SCOPE = "pgha-it-bh"
SPEC = {"scope": SCOPE, "nodes": 2, "etcd_members": 1, "ports": {"rw": 26800, "ro": 26801, "stats": 26802}, "pooler": {"enabled": False}}
S3_SCOPE = "pgha-it-bh3"
S3_NET = f"{S3_SCOPE}-s3net"
S3_HOST = f"{S3_SCOPE}-s3"
S3_SPEC = {"scope": S3_SCOPE, "nodes": 2, "etcd_members": 1, "ports": {"rw": 26810, "ro": 26811, "stats": 26812}, "pooler": {"enabled": False}}
# moto's own TLS (werkzeug) ends a connection after a PUT without TLS close_notify, which
# pgBackRest (OpenSSL 3) rejects ("unexpected eof while reading"): HAProxy terminates TLS in
# front of moto's plain HTTP, as a load balancer would in front of a real S3-compatible store.
HAPROXY_CFG = """defaults
  mode http
  timeout connect 5s
  timeout client 120s
  timeout server 120s
frontend s3
  bind :443 ssl crt /certs/s3.pem
  default_backend moto
backend moto
  server moto 127.0.0.1:5000
"""


@pytest.fixture(scope="module")
def bh(engine: docker.DockerClient, base_env: dict[str, str],
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with running_cluster(engine, base_env, tmp_path_factory.mktemp("bh"), SPEC) as c:
        yield c


def node_sh(engine: docker.DockerClient, c: Cluster, member: str, script: str, user: str = "root") -> str:
    r = engine.containers.get(c.container(member)).exec_run(["sh", "-c", script], user=user)
    out = r.output.decode(errors="replace")
    assert r.exit_code == 0, f"{script}: exit {r.exit_code}: {out[-1500:]}"
    return out


def info_json(engine: docker.DockerClient, c: Cluster) -> list[dict[str, object]]:
    return list(json.loads(node_sh(engine, c, "pg-1", f"pgbackrest --config={layout.BACKUP_CONF} "
                                                      f"--stanza={c.scope} info --output=json", user="postgres")))


def assert_secret_nowhere(engine: docker.DockerClient, c: Cluster, secret: str) -> None:
    """Not in any container's env, argv or labels of the cluster; the state file is 0600."""
    for ct in engine.containers.list(all=True, filters={"label": f"pgha.cluster={c.scope}"}):
        cfg = ct.attrs["Config"]
        blob = json.dumps([cfg.get("Env"), cfg.get("Cmd"), cfg.get("Entrypoint"), cfg.get("Labels"), ct.attrs["Args"]])
        assert secret not in blob, ct.name


def test_encrypted_repository_backup_and_verify(bh: Cluster, engine: docker.DockerClient) -> None:
    c = bh
    pass_file = Path(c.env["PGHA_STATE_DIR"]) / c.scope / "pgbackrest" / "cipher.pass"
    assert pass_file.stat().st_mode & 0o777 == 0o600
    passphrase = pass_file.read_text().strip()
    assert len(passphrase) >= 32
    (stanza,) = [s for s in info_json(engine, c) if s["name"] == c.scope]
    assert stanza["cipher"] == "aes-256-cbc", stanza
    # The archive is really encrypted: an archived WAL segment is not a readable WAL page.
    sql(c, "select pg_switch_wal()")
    node_sh(engine, c, "pg-1", f"pgbackrest --config={layout.BACKUP_CONF} --stanza={c.scope} check", user="postgres")
    seg = node_sh(engine, c, "pg-1", f"find {layout.REPO_MOUNT}/archive/{c.scope} -name '0000*-*' | head -1").strip()
    assert seg, "no archived segment"
    head = engine.containers.get(c.container("pg-1")).exec_run(["head", "-c", "8", seg], user="root").output
    assert head == b"Salted__", head  # pgBackRest's aes-256-cbc file header, not zstd's magic
    b = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--json"))
    assert b["verification"] and b["verification"]["ok"] is True, b  # type: ignore[index]
    assert_secret_nowhere(engine, c, passphrase)


def archiver(c: Cluster) -> tuple[int, object, object]:
    (row,) = sql(c, "select failed_count, last_failed_time, last_archived_time from pg_stat_archiver")
    return int(row[0]), row[1], row[2]  # type: ignore[call-overload]


def wait_until(what: str, fn: object, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not fn():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


def test_archiving_failure_is_a_critical_audit_row_until_healed(bh: Cluster, engine: docker.DockerClient) -> None:
    c = bh
    archive = f"{layout.REPO_MOUNT}/archive/{c.scope}"
    node_sh(engine, c, "pg-1", f"find {archive} -type d -exec chmod 0500 {{}} +")  # the repository refuses new WAL
    try:
        sql(c, "create table if not exists bh_arch (x int)")
        sql(c, "insert into bh_arch values (1)")
        sql(c, "select pg_switch_wal()")

        def failing() -> bool:
            n, failed, archived = archiver(c)
            return n > 0 and failed is not None and (archived is None or failed > archived)  # type: ignore[operator]

        wait_until("archive_command to fail", failing)
        res = pgha(c.env, "audit", "--scope", c.scope, "--json")
        assert res.returncode != 0, res.stdout[-1500:]
        row = {r["check"]: r for r in json.loads(res.stdout)["findings"]}["backup.archiving"]
        assert row["status"] == "critical" and row["observed"].startswith("failing"), row
    finally:
        node_sh(engine, c, "pg-1", f"find {archive} -type d -exec chmod 0750 {{}} +")
    sql(c, "insert into bh_arch values (2)")  # new WAL, so the switch makes a segment and wakes the archiver
    sql(c, "select pg_switch_wal()")
    wait_until("archiving to succeed again", lambda: (lambda a: a[2] is not None and (a[1] is None or a[2] > a[1]))(
        archiver(c)), timeout=120)
    rows = {r["check"]: r for r in ok(pgha(c.env, "audit", "--scope", c.scope, "--json"))["findings"]}  # type: ignore[union-attr]
    assert rows["backup.archiving"]["status"] == "ok" and "since recovered" in rows["backup.archiving"]["observed"]
    # The audit's other backup rows, from the same run (ages: tests/unit/test_backup_hardening.py).
    assert rows["backup.encryption"]["status"] == "ok" and rows["backup.encryption"]["observed"] == "aes-256-cbc"
    assert rows["backup.full_age"]["status"] in ("ok", "warn"), rows["backup.full_age"]  # warn: no full yet


def test_in_place_restore_with_missing_wal_leaves_the_cluster_serving(bh: Cluster, engine: docker.DockerClient) -> None:
    c = bh
    b = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--no-verify", "--json"))
    sql(c, "create table if not exists bh_pitr (tag text)")
    sql(c, "insert into bh_pitr values ('t2')")
    time.sleep(1.5)
    noted = dt.datetime.now(dt.UTC)
    time.sleep(1.5)
    sql(c, "insert into bh_pitr values ('t3')")
    sql(c, "select pg_switch_wal()")
    node_sh(engine, c, "pg-1", f"pgbackrest --config={layout.BACKUP_CONF} --stanza={c.scope} check", user="postgres")
    # Remove every archived segment after the backup's last one: the target cannot be reached.
    stop = next(s for s in info_json(engine, c)[0]["backup"] if s["label"] == b["label"])["archive"]["stop"]  # type: ignore[index, union-attr]
    removed = node_sh(engine, c, "pg-1", "python3 -c \"import glob, os\n"
                                         f"for f in glob.glob('{layout.REPO_MOUNT}/archive/{c.scope}/*/*/0*'):\n"
                                         f"    if os.path.basename(f)[:24] > '{stop}': os.remove(f); print(f)\"")
    assert removed.strip(), "no segment after the backup was archived"
    ids = {m: engine.containers.get(c.container(m)).id for m in ("pg-1", "pg-2", "haproxy")}
    started = time.monotonic()
    res = pgha(c.env, "restore", "--scope", c.scope, "--to", noted.strftime("%Y-%m-%d %H:%M:%S.%f+00"),
               "--in-place", "--yes")
    # A failure inside the flow (not a refusal): Prefect's run log shows the task's error; the
    # CLI ends with exactly one `pgha: error:` line, exit 4.
    assert res.returncode == 4, (res.returncode, res.stderr[-2000:])
    errs = [ln for ln in res.stderr.splitlines() if ln.startswith("pgha: error:")]
    assert len(errs) == 1 and res.stderr.strip().splitlines()[-1] == errs[0], res.stderr[-2000:]
    line = errs[0]
    assert "failed before the cluster was touched" in line and "still serves" in line, line
    assert "recovery ended before configured recovery target was reached" in line, line
    print(f"in-place restore with missing WAL refused in {time.monotonic() - started:.1f}s")  # noqa: T201
    assert {m: engine.containers.get(c.container(m)).id for m in ids} == ids
    assert sorted(str(r[0]) for r in sql(c, "select tag from bh_pitr")) == ["t2", "t3"]
    sql(c, "insert into bh_pitr values ('t4')")  # still the writable primary
    left = engine.containers.get(c.container("pg-1")).exec_run(["ls", layout.DATA_MOUNT]).output.decode()
    assert "pgdata.restored" not in left, left
    st = json.loads(pgha(c.env, "status", "--json", "--scope", c.scope).stdout)
    assert st["healthy"] is True, st


# ---- S3 over TLS ----

def make_test_ca(tmp: Path) -> dict[str, Path]:
    """A test CA and a server certificate for the S3 container's name (and localhost)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("pgha test S3 CA")).issuer_name(name("pgha test S3 CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    crt = (x509.CertificateBuilder().subject_name(name(S3_HOST)).issuer_name(ca.subject).public_key(key.public_key())
           .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
           .not_valid_after(now + dt.timedelta(days=2))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(S3_HOST), x509.DNSName("localhost")]), critical=False)
           .sign(ca_key, hashes.SHA256()))
    out = {"ca": tmp / "ca.crt", "crt": tmp / "s3.crt", "key": tmp / "s3.key"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out["crt"].write_bytes(crt.public_bytes(serialization.Encoding.PEM))
    out["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))
    return out


def put_certs(ct: docker.models.containers.Container, files: dict[str, bytes]) -> None:
    """Files into /certs of a created (not yet started) container."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        d = tarfile.TarInfo("certs")
        d.type, d.mode = tarfile.DIRTYPE, 0o700
        tar.addfile(d)
        for name, data in files.items():
            ti = tarfile.TarInfo(f"certs/{name}")
            ti.size, ti.mode = len(data), 0o600
            tar.addfile(ti, io.BytesIO(data))
    ct.put_archive("/", buf.getvalue())


@pytest.fixture(scope="module")
def s3_cluster(engine: docker.DockerClient, base_env: dict[str, str],
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("bh3")
    certs = make_test_ca(tmp)
    spec = {**S3_SPEC, "backup": {"s3": {"bucket": "pgha-bh", "endpoint": S3_HOST, "uri_style": "path",
                                         "path": "/repo", "ca_file": str(certs["ca"]), "network": S3_NET}}}
    c = make_cluster(engine, base_env, tmp, spec)  # removes what an earlier run left (by label) first
    labels = {"pgha.cluster": S3_SCOPE, "pgha.role": "s3-test"}
    engine.networks.create(S3_NET, driver="bridge", labels=labels)
    ct = engine.containers.create(moto_image(engine), name=S3_HOST, labels=labels, network=S3_NET,
                                  command=["sh", "-c", "moto_server -H 127.0.0.1 -p 5000 >/tmp/moto.log 2>&1 & "
                                                       "exec haproxy -db -f /certs/haproxy.cfg"])
    put_certs(ct, {"ca.crt": certs["ca"].read_bytes(), "haproxy.cfg": HAPROXY_CFG.encode(),
                   "s3.pem": certs["crt"].read_bytes() + certs["key"].read_bytes()})
    ct.start()
    creds = {"key": "AKIATESTPGHA", "secret": "pgha-test-s3-secret-0123456789"}
    create = ("import boto3; boto3.client('s3', endpoint_url='https://localhost', verify='/certs/ca.crt', "
              f"aws_access_key_id='{creds['key']}', aws_secret_access_key='{creds['secret']}', "
              "region_name='us-east-1').create_bucket(Bucket='pgha-bh')")
    deadline = time.monotonic() + 60
    while (r := ct.exec_run(["python3", "-c", create])).exit_code != 0:
        assert time.monotonic() < deadline, r.output.decode()[-1500:]
        time.sleep(1)
    state = Path(base_env["PGHA_STATE_DIR"]) / S3_SCOPE
    state.mkdir(parents=True, exist_ok=True, mode=0o700)
    (state / "s3-credentials.json").write_text(json.dumps(creds))
    (state / "s3-credentials.json").chmod(0o600)
    try:
        up(c)
        yield c
    finally:
        pgha(c.env, "down", "--volumes", "--yes", "--purge-backups", "--spec", str(c.spec_file))
        remove_scope(engine, S3_SCOPE)


def test_s3_over_tls_backup_and_verify(s3_cluster: Cluster, engine: docker.DockerClient) -> None:
    c = s3_cluster
    (stanza,) = [s for s in info_json(engine, c) if s["name"] == c.scope]
    assert stanza["cipher"] == "aes-256-cbc", stanza
    sql(c, "create table s3t (x int)")
    sql(c, "insert into s3t select generate_series(1, 1000)")
    b = ok(pgha(c.env, "backup", "--scope", c.scope, "--type", "full", "--json"))
    assert b["verification"] and b["verification"]["ok"] is True, b  # type: ignore[index]
    (stanza,) = [s for s in info_json(engine, c) if s["name"] == c.scope]
    assert stanza["status"]["code"] == 0 and [x["label"] for x in stanza["backup"]] == [b["label"]], stanza  # type: ignore[index, union-attr]
    # The objects are in the bucket (through moto's own S3 API), not in a local volume.
    # Bundled (backup.block_incremental): a handful of objects, the set's manifest and bundles among them.
    ls = ("import boto3; c = boto3.client('s3', endpoint_url='https://localhost', verify='/certs/ca.crt', "
          "aws_access_key_id='a', aws_secret_access_key='b', region_name='us-east-1'); "
          "print(' '.join(o['Key'] for p in c.get_paginator('list_objects_v2').paginate(Bucket='pgha-bh', "
          "Prefix='repo/backup/') for o in p.get('Contents', [])))")
    keys = engine.containers.get(S3_HOST).exec_run(["python3", "-c", ls]).output.decode().strip().splitlines()[-1].split()
    in_set = [k for k in keys if k.startswith(f"repo/backup/{c.scope}/{b['label']}/")]
    assert f"repo/backup/{c.scope}/{b['label']}/backup.manifest" in in_set, keys
    assert len(in_set) >= 3, keys  # the manifest, its copy and the stored files (bundles or relation files)
    secret = json.loads((Path(c.env["PGHA_STATE_DIR"]) / c.scope / "s3-credentials.json").read_text())["secret"]
    assert_secret_nowhere(engine, c, secret)
    # Without the CA, the nodes' pgBackRest refuses the endpoint's certificate (TLS is really checked).
    r = engine.containers.get(c.container("pg-1")).exec_run(
        ["pgbackrest", f"--config={layout.BACKUP_CONF}", f"--stanza={c.scope}", "--repo1-storage-ca-file=/etc/ssl/certs/ca-certificates.crt",
         "info"], user="postgres")
    assert "unable to verify certificate presented by" in r.output.decode(), r.output.decode()[-800:]
