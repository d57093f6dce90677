"""A spec cannot inject configuration: hostile strings are refused in one line, or every rendered
config parses back to exactly the entries intended (property-based, hypothesis)."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stack import backup as bk
from stack import render
from stack.errors import SpecError
from stack.secrets import Secrets
from stack.spec import parse_spec

VALID = ["10.0.0.11", "10.0.0.12", "db-a.example.com", "h3", "minio.local:9000", "s3.eu-west-1.amazonaws.com",
         "bucket-a", "eu-west-1", "/pgha", "/backups/a.b", "work_mem", "pgha.custom", "64MB", "on"]
HOSTILE = ["0.0.0.0/0 trust #", "10.0.0.5\nrepo1-cipher-type=none", "x\r\nhostssl all all 0.0.0.0/0 trust",
           "a b", "#c", "minio.local:9000 # x", "ok\u2028repo1-cipher-type=none", "evil\x00", "nel\x85x", "'q'",
           '"q"', "a,b=c", "[global]", " lead", "trail ", "rtl\u202eoverride", "10.0.0.5/8", "::1", "fe80::1",
           "0.0.0.0",  # noqa: S104 - an address a spec must refuse
           "h1.example.com:", "a..b", "http://minio:9000", "/p/../etc", "x=y", "10.0.0.256",
           "-lead.example", "\t", "a\\b", "%s", "${HOME}", "$(id)"]
JOIN = ["\n", "\r", "#", " ", "\x00", "\u2028", ",", "=", ":", "/", "", "\x1b", "\x9b"]

hostile = st.one_of(
    st.sampled_from(HOSTILE + VALID),
    st.text(max_size=16),
    st.builds(lambda a, j, b: a + j + b, st.sampled_from(VALID), st.sampled_from(JOIN),
              st.one_of(st.sampled_from(HOSTILE + VALID), st.text(max_size=6))),
)
SECRETS = Secrets(superuser="su-pass-xyz", replication="repl-pass-xyz", rewind="rew-pass-xyz", restapi="api-pass-xyz")
PROPERTY = settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _hba_address(addr: str) -> str:
    try:
        return f"{ipaddress.IPv4Address(addr)}/32"
    except ValueError:
        return addr


def _parse_haproxy(text: str) -> list[tuple[str, list[str]]]:
    """haproxy.cfg as HAProxy splits it: an unindented line opens a section, indented lines are its directives."""
    out: list[tuple[str, list[str]]] = []
    for line in text.splitlines()[1:]:
        if not line.strip():
            continue
        if line.startswith("    "):
            out[-1][1].append(line[4:])
        else:
            out.append((line, []))
    return out


def _parse_ini(text: str) -> dict[str, dict[str, str]]:
    """pgBackRest's ini as pgBackRest reads it: `[section]`, `key=value` (split at the first `=`), `#` lines skipped."""
    out: dict[str, dict[str, str]] = {}
    section = ""
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out[section] = {}
            continue
        key, _, value = line.partition("=")
        assert key not in out[section], f"{key} given twice"
        out[section][key] = value
    return out


def _refused_in_one_line(exc: SpecError) -> None:
    msg = str(exc)
    assert msg and not any(c in msg for c in "\n\r\x00\u2028"), repr(msg)


def _check_rendered(raw: dict[str, Any], s3_creds: dict[str, str]) -> bool:
    """True when the spec was accepted and every config checked; False when it was refused in one line."""
    try:
        spec = parse_spec(raw, "prop.yaml")
    except SpecError as exc:
        _refused_in_one_line(exc)
        return False
    assert spec.hosts is not None and spec.backup.s3 is not None
    addresses = [h.address for h in spec.hosts]

    # patroni.yml: YAML gives back exactly the configuration, and pg_hba has exactly the intended lines.
    conf = render.patroni_config(spec, "pg-1", "", SECRETS)
    assert yaml.safe_load(render.render_patroni_yml(spec, "pg-1", "", SECRETS)) == conf
    assert conf["postgresql"]["parameters"]["unix_socket_directories"]
    assert {k: v for k, v in conf["bootstrap"]["dcs"]["postgresql"]["parameters"].items()
            if k in spec.postgres_parameters} == spec.postgres_parameters
    hba = [line.split() for line in conf["postgresql"]["pg_hba"]]
    assert all(len(f) in (4, 5) and not any(t.startswith("#") for t in f) for f in hba), hba
    assert [f[3] for f in hba[4:]] == [a for addr in addresses for a in (_hba_address(addr),) * 2]
    assert all(f[-1] in ("scram-sha-256", "peer") for f in hba)

    # haproxy.cfg: sections and directives as built; each server line is `server NAME ADDR:PORT` and nothing more.
    text = render.render_haproxy_cfg(spec)
    parsed = _parse_haproxy(text)
    assert parsed == [(s.header, s.directives) for s in render.haproxy_sections(spec)]
    servers = [d.split() for _, ds in parsed for d in ds if d.startswith("server ")]
    assert [s[2] for s in servers] == [f"{a}:5432" for a in addresses] * 2 and all(len(s) == 3 for s in servers)

    # etcd's flags: --initial-cluster names exactly the members, each at its host's address.
    flags = render.etcd_command(spec, "etcd-1")
    initial = next(f for f in flags if f.startswith("--initial-cluster="))
    assert initial.split("=", 1)[1].split(",") == [f"etcd-{i + 1}=https://{a}:2380" for i, a in enumerate(addresses)]

    # pgBackRest: the S3 options are exactly the spec's values; no option appears that pgha did not write.
    try:
        ini = bk.render_node_conf(spec, s3_creds, "a-passphrase-xyz")
    except SpecError as exc:
        _refused_in_one_line(exc)
        assert all(v not in str(exc) for v in s3_creds.values() if len(v) > 3)  # the value itself never shown
        return False
    glob = _parse_ini(ini)["global"]
    s3 = spec.backup.s3
    assert (glob["repo1-s3-endpoint"], glob["repo1-s3-bucket"], glob["repo1-s3-region"], glob["repo1-path"]) == (
        s3.endpoint, s3.bucket, s3.region, s3.path)
    assert (glob["repo1-s3-key"], glob["repo1-s3-key-secret"]) == (s3_creds["key"], s3_creds["secret"])
    assert glob["repo1-cipher-type"] == "aes-256-cbc" and glob["repo1-cipher-pass"] == "a-passphrase-xyz"
    assert set(glob) == set(_parse_ini(bk.render_node_conf(spec.model_copy(), {"key": "k", "secret": "s"}, "p"))["global"])
    return True


# Where a hostile value goes: each field of the spec that reaches a config file, and the S3 credentials
# (from s3-credentials.json, not the spec, but written into the same pgBackRest file).
FIELDS = ["hosts.0.address", "hosts.1.address", "hosts.0.client_address", "backup.s3.endpoint", "backup.s3.bucket",
          "backup.s3.region", "backup.s3.path", "postgres_parameters.name", "postgres_parameters.value",
          "s3_credentials.key", "s3_credentials.secret"]
RENDERED: list[int] = []


def _raw(field: str, value: str) -> tuple[dict[str, Any], dict[str, str]]:
    hosts: list[dict[str, Any]] = [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"}
                                   for i in (1, 2, 3)]
    s3 = {"bucket": "bucket-a", "endpoint": "minio.local:9000", "region": "eu-west-1", "path": "/pgha"}
    params = {"name": "work_mem", "value": "64MB"}
    creds = {"key": "access-key-1", "secret": "secret-key-1"}
    group, _, key = field.rpartition(".")
    if group.startswith("hosts."):
        hosts[int(group.split(".")[1])][key] = value
    elif group == "backup.s3":
        s3[key] = value
    elif group == "postgres_parameters":
        params[key] = value
    else:
        creds[key] = value
    raw = {"scope": "prop", "ports": {"rw": 5000, "ro": 5001, "stats": 7000}, "hosts": hosts,
           "postgres_parameters": {params["name"]: params["value"]}, "backup": {"s3": s3}}
    return raw, creds


@PROPERTY
@given(field=st.sampled_from(FIELDS), value=hostile)
def _hostile_value(field: str, value: str) -> None:
    raw, creds = _raw(field, value)
    if _check_rendered(raw, creds):
        RENDERED.append(1)


def test_hostile_strings_are_refused_or_render_exactly() -> None:
    RENDERED.clear()
    _hostile_value()
    assert RENDERED, "no generated spec was accepted: the rendering half of the property was never checked"


@pytest.mark.parametrize(("patch", "fragment"), [
    ({"hosts.0.address": "0.0.0.0/0 trust #"}, "is not an IPv4 address or a host name"),
    ({"backup.s3.endpoint": "minio:9000\nrepo1-cipher-type=none"}, "holds the control character U+000A"),
    ({"backup.s3.bucket": "b\u2028x"}, "holds the control character U+2028"),
    ({"backup.s3.endpoint": "https://minio:9000"}, "without a scheme"),
    ({"hosts.0.address": "fe80::1"}, "IPv6 addresses are not supported"),
    ({"image": "pgha/node:1 --privileged"}, "is not an image reference"),
    ({"postgres_parameters": {"work_mem\n": "1"}}, "holds the control character U+000A"),
    ({"postgres_parameters": {"a b": "1"}}, "is not a PostgreSQL parameter name"),
    ({"backup.s3.path": "/a/../b"}, "must be an absolute path"),
    ({"hosts.1.engine_socket": "/run/docker sock"}, "engine_socket"),
    ({"hosts.1.docker": "tcp://h2:2376 x"}, "the port must be 1-65535"),
])
def test_examples_are_refused_in_one_line(patch: dict[str, Any], fragment: str) -> None:
    raw: dict[str, Any] = {"scope": "prop", "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                           "hosts": [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"}
                                     for i in (1, 2, 3)],
                           "backup": {"s3": {"bucket": "bucket-a", "endpoint": "minio.local:9000"}}}
    for dotted, value in patch.items():
        *parents, last = dotted.split(".")
        node: Any = raw
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node[p]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    with pytest.raises(SpecError) as err:
        parse_spec(raw, "bad.yaml")
    assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_insecure_combinations_need_their_entry_and_only_then() -> None:
    base: dict[str, Any] = {"scope": "prop", "ports": {"rw": 5000, "ro": 5001, "stats": 7000},
                            "backup": {"enabled": False},
                            "hosts": [{"name": f"h{i}", "docker": f"ssh://ops@h{i}", "address": f"10.0.0.1{i}"}
                                      for i in (1, 2, 3)]}
    with pytest.raises(SpecError, match="unencrypted over the hosts' network; fix it, or add 'plaintext-between-hosts'"):
        parse_spec({**base, "tls": {"enabled": False}})
    assert parse_spec({**base, "tls": {"enabled": False}, "insecure": ["plaintext-between-hosts"]}).insecure
    tcp = [*base["hosts"][:2], {"name": "h3", "docker": "tcp://10.0.0.13:2375", "address": "10.0.0.13"}]
    with pytest.raises(SpecError, match="host h3's engine tcp://10.0.0.13:2375 has no tls"):
        parse_spec({**base, "hosts": tcp})
    parse_spec({**base, "hosts": tcp, "insecure": ["plaintext-engine-api"]})
    with pytest.raises(SpecError, match="insecure lists 'plaintext-engine-api' but the spec has no such combination"):
        parse_spec({**base, "insecure": ["plaintext-engine-api"]})
    with pytest.raises(SpecError, match="insecure.0"):
        parse_spec({**base, "insecure": ["everything"]})
    # tls off on a single engine stays allowed (the benchmark's comparison): its traffic never leaves the host
    parse_spec({"scope": "prop", "tls": {"enabled": False}})
