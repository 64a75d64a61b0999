"""Real gRPC servers over real mutual TLS on 127.0.0.1: who gets in, who is refused, and why."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import socket
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certs.gen_cert import main as gen_cert
from swarm_testing import Site
from swarm.identity import (
    Authorizer,
    NodeIdentity,
    TlsConfigError,
    TlsFiles,
    TlsMaterial,
    caller_identity,
    explain_connection_failure,
    identity_from_pem,
    issue_node_certificate,
    load_tls,
    peer_ip,
    write_pem_cert,
    write_pem_key,
)

METHOD = "/swarm.test.Probe/Call"


def _make_site(root: Path, name: str, index: int) -> Site:
    assert gen_cert(["-e", name, "-i", str(index), "--out", str(root)]) == 0
    return Site(name, index, root / name / "cert")


def _trust(site: Site, other: Site) -> None:
    shutil.copy(other.capath / f"ca-{other.index}-cert.pem", site.capath / f"ca-{other.index}-cert.pem")


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    a, b, c = _make_site(root, "siteA", 1), _make_site(root, "siteB", 2), _make_site(root, "siteC", 3)
    _trust(a, b)
    _trust(b, a)
    _trust(c, a)  # C trusts A, but A does not trust C
    return a, b, c


@dataclass
class Served:
    port: int
    seen: list = field(default_factory=list)


@pytest.fixture
def serve():
    """Start a one-method server: the handler authorizes, then echoes the caller's node id."""
    servers = []

    def start(material: TlsMaterial, allowed=("sl",), authorizer=None) -> Served:
        authz = authorizer or Authorizer(logger=logging.getLogger("test.authz"))
        served = Served(0)

        def call(request: bytes, context: grpc.ServicerContext) -> bytes:
            ident = authz.authorize(context, allowed, "Call")
            assert caller_identity(context) == ident
            served.seen.append(ident)
            return request + b"|" + ident.node_id.encode()

        handler = grpc.method_handlers_generic_handler(
            "swarm.test.Probe", {"Call": grpc.unary_unary_rpc_method_handler(call)}
        )
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), handlers=[handler])
        served.port = server.add_secure_port("127.0.0.1:0", material.server_credentials())
        server.start()
        servers.append(server)
        return served

    yield start
    for s in servers:
        s.stop(None)


def _call(material: TlsMaterial, port: int, peer_role: str) -> bytes:
    with material.secure_channel(f"127.0.0.1:{port}", peer_role) as channel:
        return channel.unary_unary(METHOD)(b"hi", timeout=5)


def _call_error(material: TlsMaterial, port: int, peer_role: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as exc:
        _call(material, port, peer_role)
    return exc.value


def _node_cert(site: Site, tmp_path: Path, role: str = "sl", index: int = 7, **kw) -> TlsMaterial:
    """An extra certificate from ``site``'s CA, loaded without load_tls's checks."""
    ca_key, ca_cert = site.ca()
    key, cert = issue_node_certificate(ca_key, ca_cert, role=role, index=index, site=site.name, **kw)
    cert_file = write_pem_cert(tmp_path / f"{role}-{index}-cert.pem", cert)
    key_file = write_pem_key(tmp_path / f"{role}-{index}-key.pem", key)
    ca_bundle = b"".join(p.read_bytes() for p in sorted(site.capath.glob("*.pem")))
    return TlsMaterial(cert_file.read_bytes(), key_file.read_bytes(), ca_bundle,
                       identity_from_pem(cert_file.read_bytes()))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- accepted


def test_two_sites_call_succeeds_and_servicer_sees_identity(sites, serve):
    a, b, _ = sites
    server_mat, client_mat = a.material("sn"), b.material("sl")
    assert client_mat.identity.node_id == "siteB/sl-2"
    served = serve(server_mat, allowed=("sl",))
    assert _call(client_mat, served.port, "sn") == b"hi|siteB/sl-2"
    assert served.seen == [client_mat.identity]
    assert isinstance(served.seen[0], NodeIdentity)
    # The probe must not cry wolf at a server that accepts us.
    why = explain_connection_failure(f"127.0.0.1:{served.port}", client_mat, "sn", None)
    assert why.startswith(f"127.0.0.1:{served.port} accepts our certificate siteB/sl-2 and is a valid 'sn'")
    # Both CAs are in the bundle, sorted by file name, each once.
    assert client_mat.ca_bundle_pem.count(b"BEGIN CERTIFICATE") == 2
    assert client_mat.ca_bundle_pem == (b.capath / "ca-1-cert.pem").read_bytes() + \
        (b.capath / "ca-2-cert.pem").read_bytes()


def test_tls_files_load_and_matching_ip_san_is_allowed(sites, serve, tmp_path):
    a, b, _ = sites
    cert, key = (a.cert("sl"), a.key("sl"))
    assert TlsFiles(cert, key, a.capath).load().identity.node_id == "siteA/sl-1"
    served = serve(a.material("sn"))
    bound = _node_cert(b, tmp_path, host_ips=("127.0.0.1",))
    assert _call(bound, served.port, "sn") == b"hi|siteB/sl-7"


# --------------------------------------------------------------------------- refused in TLS


def test_foreign_ca_is_refused_and_explained(sites, serve):
    a, _, c = sites
    served = serve(a.material("sn"))
    client = c.material("sl")  # C trusts A, but A's capath lacks C's CA
    err = _call_error(client, served.port, "sn")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert served.seen == []
    why = explain_connection_failure(f"127.0.0.1:{served.port}", client, "sn", err)
    assert why.startswith(f"127.0.0.1:{served.port} refused our certificate siteC/sl-3 during the TLS handshake")
    assert "capath does not trust our CA" in why


def test_expired_client_certificate(sites, serve, tmp_path):
    a, b, _ = sites
    now = dt.datetime.now(dt.timezone.utc)
    expired = _node_cert(b, tmp_path, not_before=now - dt.timedelta(days=30),
                         not_after=now - dt.timedelta(days=1))
    with pytest.raises(TlsConfigError, match=r"^--cert .*sl-7-cert.pem: own certificate siteB/sl-7 expired on \d{4}-"):
        load_tls(tmp_path / "sl-7-cert.pem", tmp_path / "sl-7-key.pem", b.capath)
    served = serve(a.material("sn"))
    err = _call_error(expired, served.port, "sn")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert served.seen == []
    why = explain_connection_failure(f"127.0.0.1:{served.port}", expired, "sn", err)
    assert "refused our certificate siteB/sl-7" in why and "our certificate expired on" in why


def test_server_with_wrong_role_is_refused_by_client(sites, serve):
    a, b, _ = sites
    served = serve(a.material("sn"))
    client = b.material("sl")
    err = _call_error(client, served.port, "sl")  # we want an SL peer; it is an SN
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    why = explain_connection_failure(f"127.0.0.1:{served.port}", client, "sl", err)
    assert why == f"127.0.0.1:{served.port} is siteA/sn-1 with role 'sn', not the 'sl' we expected"


def test_server_not_trusted_by_client_is_explained(sites, serve, tmp_path):
    a, b, c = sites
    served = serve(c.material("sn"))  # C's server trusts A ...
    client = a.material("sl")  # ... but A does not trust C
    err = _call_error(client, served.port, "sn")
    why = explain_connection_failure(f"127.0.0.1:{served.port}", client, "sn", err)
    assert "presented certificate siteC/sn-3" in why and "no CA in our capath trusts" in why


def test_nothing_listening_is_explained(sites):
    _, b, _ = sites
    port = _free_port()
    client = b.material("sl")
    err = _call_error(client, port, "sn")
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert explain_connection_failure(f"127.0.0.1:{port}", client, "sn", err) == \
        f"nothing listens on 127.0.0.1:{port} (connection refused)"
    assert "nothing listens on 127.0.0.1:" in explain_connection_failure(f"ipv4:127.0.0.1:{port}", client, "sn", err)


# --------------------------------------------------------------------------- refused by Authorizer


def test_wrong_role_is_permission_denied_and_logged_once(sites, serve, caplog):
    a, _, _ = sites
    served = serve(a.material("sn"), allowed=("sn",))
    client = a.material("swci")
    with caplog.at_level(logging.WARNING, logger="test.authz"):
        err = _call_error(client, served.port, "sn")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    fp = client.identity.short_fingerprint
    assert err.details() == f"swci-1 (siteA/swci-1, fp {fp}) with role 'swci' may not call Call; allowed: sn"
    assert served.seen == []
    records = [r for r in caplog.records if r.name == "test.authz"]
    assert len(records) == 1 and records[0].levelno == logging.WARNING
    assert "siteA/swci-1" in records[0].getMessage() and fp in records[0].getMessage()
    assert "127.0.0.1" in records[0].getMessage()
    # A non-transport failure is explained by its own status, without probing.
    why = explain_connection_failure(f"127.0.0.1:{served.port}", client, "sn", err)
    assert why.startswith(f"127.0.0.1:{served.port}: PERMISSION_DENIED: swci-1")


def test_revoked_fingerprint_is_permission_denied(sites, serve):
    a, b, _ = sites
    revoked = b.material("sl")
    authz = Authorizer(is_revoked=lambda fp: fp == revoked.identity.fingerprint,
                       logger=logging.getLogger("test.authz"))
    served = serve(a.material("sn"), allowed=("sl",), authorizer=authz)
    err = _call_error(revoked, served.port, "sn")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "siteB/sl-2" in err.details() and "revoked" in err.details()
    # Only that fingerprint: another SL still gets in.
    assert _call(a.material("sl"), served.port, "sn") == b"hi|siteA/sl-1"
    assert [i.node_id for i in served.seen] == ["siteA/sl-1"]


def test_ip_san_mismatch_is_refused(sites, serve, tmp_path):
    a, b, _ = sites
    served = serve(a.material("sn"))
    elsewhere = _node_cert(b, tmp_path, host_ips=("10.255.0.1",))
    err = _call_error(elsewhere, served.port, "sn")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "connects from 127.0.0.1" in err.details() and "bound to IP 10.255.0.1" in err.details()
    assert served.seen == []


def test_certificate_without_identity_is_unauthenticated(sites, serve, tmp_path):
    a, b, _ = sites
    served = serve(a.material("sn"))
    ca_key, ca_cert = b.ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "anonymous")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("anonymous")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_file = write_pem_cert(tmp_path / "anon-cert.pem", cert)
    key_file = write_pem_key(tmp_path / "anon-key.pem", key)
    with pytest.raises(TlsConfigError, match="CN=anonymous has no swarm identity extension"):
        load_tls(cert_file, key_file, b.capath)
    bundle = (b.capath / "ca-1-cert.pem").read_bytes() + (b.capath / "ca-2-cert.pem").read_bytes()
    creds = grpc.ssl_channel_credentials(bundle, key_file.read_bytes(), cert_file.read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{served.port}", creds,
                             options=[("grpc.ssl_target_name_override", "swarm-sn")]) as ch:
        with pytest.raises(grpc.RpcError) as exc:
            ch.unary_unary(METHOD)(b"hi", timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "no swarm identity extension" in exc.value.details()
    assert served.seen == []


# --------------------------------------------------------------------------- load_tls checks


def test_load_tls_errors_name_flag_and_problem(sites, tmp_path):
    a, b, _ = sites
    cert, key = (a.cert("sl"), a.key("sl"))
    empty, nodes_only = tmp_path / "empty", tmp_path / "nodes_only"
    empty.mkdir()
    nodes_only.mkdir()
    shutil.copy(cert, nodes_only / "sl-1-cert.pem")  # a node certificate is no trust anchor
    (tmp_path / "junk.pem").write_text("not pem\n")
    cases = [
        ((tmp_path / "nope.pem", key, a.capath), r"^--cert .*nope.pem: no such file$"),
        ((key, key, a.capath), r"^--cert .*sl-1-key.pem: not a PEM certificate$"),
        ((cert, tmp_path / "nokey.pem", a.capath), r"^--key .*nokey.pem: no such file$"),
        ((cert, tmp_path / "junk.pem", a.capath), r"^--key .*junk.pem: not a PEM private key"),
        ((cert, a.key("sn"), a.capath), r"^--key .*sn-1-key.pem: key does not match the certificate in --cert"),
        ((cert, key, tmp_path / "nodir"), r"^--capath .*nodir: no such directory$"),
        ((cert, key, empty), r"^--capath .*empty: has no \*\.pem CA certificates"),
        ((cert, key, nodes_only), r"^--capath .*nodes_only: has no \*\.pem CA certificates"),
        ((cert, key, tmp_path), r"^--capath .*: junk.pem is not a PEM certificate$"),
    ]
    for args, pattern in cases:
        with pytest.raises(TlsConfigError, match=pattern):
            load_tls(*args)
    # A capath that does not hold our own CA.
    only_b = tmp_path / "only_b"
    only_b.mkdir()
    shutil.copy(b.capath / "ca-2-cert.pem", only_b / "ca-2-cert.pem")
    with pytest.raises(TlsConfigError, match=r"^--cert .*: own certificate siteA/sl-1 is not issued by any CA "
                                             r"in --capath .*only_b \(its issuer is CN=siteA swarm CA 1, O=siteA\)$"):
        load_tls(cert, key, only_b)


def test_load_tls_not_yet_valid(sites, tmp_path):
    _, b, _ = sites
    now = dt.datetime.now(dt.timezone.utc)
    _node_cert(b, tmp_path, not_before=now + dt.timedelta(days=2), not_after=now + dt.timedelta(days=9))
    with pytest.raises(TlsConfigError, match="own certificate siteB/sl-7 is not yet valid"):
        load_tls(tmp_path / "sl-7-cert.pem", tmp_path / "sl-7-key.pem", b.capath)


def test_peer_ip_forms():
    assert str(peer_ip("ipv4:127.0.0.1:5555")) == "127.0.0.1"
    assert str(peer_ip("ipv6:[::1]:5555")) == "::1"
    assert str(peer_ip("ipv6:%5B::1%5D:5555")) == "::1"
    assert str(peer_ip("ipv6:[::ffff:10.1.2.3]:5555")) == "10.1.2.3"
    assert peer_ip("unix:/tmp/sock") is None
    assert peer_ip("ipv4:garbage:1") is None
