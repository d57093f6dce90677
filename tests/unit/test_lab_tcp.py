"""`pgha lab up --engine tcp`: ports, the written spec, dockerd's flags and the engine certificates (no Docker)."""

from __future__ import annotations

import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from stack import lab
from stack.errors import SpecError, UsageError
from stack.hosts import EngineTLS
from stack.spec import parse_spec


def _hosts(engine: str, port_base: int = 27200, n: int = 2) -> list[lab.LabHost]:
    tls = EngineTLS(ca="/s/labs/x/engine-tls/ca.crt", cert="/s/labs/x/engine-tls/client.crt",
                    key="/s/labs/x/engine-tls/client.key") if engine == "tcp" else None
    out = []
    for i, (name, (rw, ro), port) in enumerate(zip(lab.host_names(n), lab.client_ports(port_base, n),
                                                    lab.engine_ports(port_base, n), strict=True)):
        sock = f"unix:///s/labs/x/{name}/docker.sock"
        eport = port if engine == "tcp" else None
        out.append(lab.LabHost(name=name, container=lab.container_name("x", name), socket=sock,
                               docker=lab.engine_url(engine, sock, eport), address=lab.host_address("10.213.5.0/24", i),
                               rw_port=rw, ro_port=ro, engine_port=eport, tls=tls))
    return out


def test_engine_ports_come_after_the_client_ports_and_only_with_tcp() -> None:
    assert lab.client_ports(27200, 2) == [(27200, 27201), (27202, 27203)]
    assert lab.engine_ports(27200, 2) == [27204, 27205]
    # The pooler's ports come after the engine ports' places, whatever the engine.
    assert lab.pool_ports(27200, 2) == [27206, 27207]
    assert lab.lab_ports(27200, 2, "unix") == [27200, 27201, 27202, 27203, 27206, 27207]
    tcp = lab.lab_ports(27200, 3, "tcp")
    assert tcp == list(range(27200, 27212)) and len(set(tcp)) == 12
    assert lab.check_engine("tcp") is None and lab.check_engine("unix") is None
    assert "--engine must be one of unix, tcp, ssh" in str(lab.check_engine("http"))


def test_tcp_lab_spec_names_tcp_engines_and_the_client_files() -> None:
    spec = parse_spec(lab.spec_data("pgha-it-tcp", _hosts("tcp")))
    assert spec.hosts is not None
    assert [h.docker for h in spec.hosts] == ["tcp://127.0.0.1:27204", "tcp://127.0.0.1:27205"]
    assert all(h.tls is not None and h.tls.cert.endswith("engine-tls/client.crt") for h in spec.hosts)
    assert spec.etcd_members == 1 and spec.nodes == 2 and spec.allow_unsafe_placement
    assert not spec.backup.enabled and not spec.fencing


def test_unix_lab_spec_is_unchanged() -> None:
    data = lab.spec_data("pgha-it-lab", _hosts("unix"))
    assert all("tls" not in h and h["docker"].startswith("unix://") for h in data["hosts"])
    assert lab.dockerd_args("unix") == []


def test_dockerd_flags_name_files_only() -> None:
    args = lab.dockerd_args("tcp")
    assert args[:3] == ["-H", "tcp://0.0.0.0:2376", "--tlsverify"]
    assert f"--tlskey={lab.ENGINE_TLS_IN_HOST}/server.key" in args
    assert f"--tlscacert={lab.ENGINE_TLS_IN_HOST}/ca.crt" in args
    assert not any("BEGIN" in a for a in args)


def test_a_record_from_before_engines_reads_as_unix() -> None:
    old = lab.LabStatus.model_validate({"name": "x", "network": "n", "subnet": "10.213.5.0/24", "spec": "/s",
                                        "hosts": [{"name": "h1", "container": "c", "docker": "unix:///s/h1.sock",
                                                   "address": "10.213.5.11", "rw_port": 1, "ro_port": 2}]})
    assert old.engine == "unix" and old.hosts[0].socket_url == "unix:///s/h1.sock"


def _sans(pem: str) -> tuple[set[str], set[str]]:
    cert = x509.load_pem_x509_certificate(pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def test_engine_certificates_sans_and_signatures() -> None:
    ca = lab.engine_ca("x")
    server = lab.engine_server("x", "h1", "10.213.5.11", ca)
    client = lab.engine_client("x", ca)
    ca_cert = x509.load_pem_x509_certificate(ca["ca.crt"].encode())
    dns, ips = _sans(server["server.crt"])
    assert dns == {"localhost"} and ips == {"127.0.0.1", "10.213.5.11"}
    assert server["ca.crt"] == ca["ca.crt"] and "ca.key" not in server  # the CA's key is never mounted
    for pem in (server["server.crt"], client["client.crt"]):
        c = x509.load_pem_x509_certificate(pem.encode())
        c.verify_directly_issued_by(ca_cert)
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, hostname: str) -> None:
    """A TLS handshake in memory (no sockets): raises ssl.SSLError when one side refuses."""
    c_in, c_out, s_in, s_out = ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=hostname)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    done = {"c": False, "s": False}
    for _ in range(20):
        for side, obj, out, peer_in in (("c", client, c_out, s_in), ("s", server, s_out, c_in)):
            if not done[side]:
                try:
                    obj.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
            peer_in.write(out.read())
        if all(done.values()):
            # TLS 1.3: the server judges the client's certificate after the client thinks it is done
            client.write(b"x")
            s_in.write(c_out.read())
            server.read(1)
            return
    raise AssertionError("handshake did not finish")


def _files(tmp: Path, files: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, text in files.items():
        (tmp / name).write_text(text)
        out[name] = str(tmp / name)
    return out


def test_mutual_tls_accepts_the_client_certificate_and_refuses_none(tmp_path: Path) -> None:
    """dockerd --tlsverify's rule, with the lab's certificates: a client certificate from the lab CA is required."""
    ca = lab.engine_ca("x")
    f = _files(tmp_path, {**lab.engine_server("x", "h1", "10.213.5.11", ca), **lab.engine_client("x", ca)})
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(f["server.crt"], f["server.key"])
    server_ctx.load_verify_locations(f["ca.crt"])
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    with_cert = ssl.create_default_context(cafile=f["ca.crt"])
    with_cert.load_cert_chain(f["client.crt"], f["client.key"])
    _handshake(server_ctx, with_cert, "127.0.0.1")
    _handshake(server_ctx, with_cert, "localhost")
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, ssl.create_default_context(cafile=f["ca.crt"]), "127.0.0.1")
    (tmp_path / "y").mkdir()
    other = _files(tmp_path / "y", lab.engine_client("y", lab.engine_ca("y")))  # another lab's client certificate
    other_ctx = ssl.create_default_context(cafile=f["ca.crt"])
    other_ctx.load_cert_chain(other["client.crt"], other["client.key"])
    with pytest.raises(ssl.SSLError):
        _handshake(server_ctx, other_ctx, "127.0.0.1")


def test_engine_tls_files_are_private_and_made_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tasks import docker_lab

    monkeypatch.setenv("PGHA_STATE_DIR", str(tmp_path))
    hosts = _hosts("tcp")
    client = docker_lab.ensure_engine_tls("x", hosts)
    d = docker_lab.lab_dir("x") / docker_lab.ENGINE_TLS
    assert client == EngineTLS(ca=str(d / "ca.crt"), cert=str(d / "client.crt"), key=str(d / "client.key"))
    files = sorted(p for p in d.rglob("*") if p.is_file())
    assert {str(p.relative_to(d)) for p in files} == {
        "ca.crt", "ca.key", "client.crt", "client.key",
        "h1/ca.crt", "h1/server.crt", "h1/server.key", "h2/ca.crt", "h2/server.crt", "h2/server.key"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    before = {p: p.read_text() for p in files}
    docker_lab.ensure_engine_tls("x", hosts)
    assert {p: p.read_text() for p in files} == before
    assert _sans((d / "h2" / "server.crt").read_text())[1] == {"127.0.0.1", "10.213.5.12"}


def test_missing_tls_file_is_a_one_line_spec_error(tmp_path: Path) -> None:
    from tasks.docker_hosts import host_engine

    (tmp_path / "ca.crt").write_text("x")
    (tmp_path / "client.key").write_text("x")
    spec = parse_spec(lab.spec_data("pgha-it-tcp", _hosts("tcp")))
    assert spec.hosts is not None
    host = spec.hosts[0].model_copy(update={"tls": EngineTLS(ca=str(tmp_path / "ca.crt"),
                                                             cert=str(tmp_path / "nope.crt"),
                                                             key=str(tmp_path / "client.key"))})
    with pytest.raises(SpecError) as exc:
        host_engine(host)
    assert str(exc.value) == f"host h1: tls.cert {tmp_path / 'nope.crt'}: No such file or directory"


def test_bad_engine_is_refused_before_docker() -> None:
    from tasks import docker_lab

    with pytest.raises(UsageError, match="--engine must be one of unix, tcp, ssh"):
        docker_lab.up("x", 2, 27200, "x", "http")


class _FakeEngine:
    """An HTTPS server on 127.0.0.1 that answers /version and /_ping like dockerd --tlsverify (client cert required)."""

    def __init__(self, tmp: Path) -> None:
        import http.server
        import threading

        ca = lab.engine_ca("fake")
        self.files = _files(tmp, {**lab.engine_server("fake", "h1", "10.213.5.11", ca), **lab.engine_client("fake", ca)})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = b'{"ApiVersion": "1.41", "Version": "fake"}' if self.path.endswith("/version") else b"OK"
                self.send_response(200)
                self.send_header("Content-Type", "application/json" if body != b"OK" else "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.files["server.crt"], self.files["server.key"])
        ctx.load_verify_locations(self.files["ca.crt"])
        ctx.verify_mode = ssl.CERT_REQUIRED
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_tls_client_verifies_with_the_given_ca_even_with_requests_ca_bundle_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """requests lets REQUESTS_CA_BUNDLE replace docker-py's CA file (psf/requests#3829): pgha's client must not."""
    import docker
    from docker.tls import TLSConfig

    from tasks.engine_client import tls_client

    engine = _FakeEngine(tmp_path)
    try:
        f = engine.files
        cfg = TLSConfig(client_cert=(f["client.crt"], f["client.key"]), ca_cert=f["ca.crt"], verify=True)
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", certifi_or_system())
        monkeypatch.setenv("CURL_CA_BUNDLE", certifi_or_system())
        with pytest.raises(docker.errors.DockerException, match="CERTIFICATE_VERIFY_FAILED"):
            docker.DockerClient(base_url=engine.url, tls=cfg, timeout=5)  # plain docker-py: the env's bundle wins
        client = tls_client(engine.url, cfg, timeout=5)
        assert client.ping() is True and client.api.api_version == "1.41"
        client.close()
        with pytest.raises(docker.errors.DockerException, match="(?i)certificate required|alert|reset|EOF"):
            tls_client(engine.url, TLSConfig(ca_cert=f["ca.crt"], verify=True), timeout=5).ping()
    finally:
        engine.close()


def certifi_or_system() -> str:
    """A CA bundle that does not hold the lab CA (the system's, else certifi's)."""
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    if system.is_file():
        return str(system)
    import certifi

    return str(certifi.where())
