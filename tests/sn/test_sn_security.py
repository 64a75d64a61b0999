"""Who an SN refuses, over real mTLS to a real run-sn process, and what it says about it."""

from __future__ import annotations

import datetime as dt
import hashlib

import grpc
import pytest

from swarm.identity import issue_node_certificate, load_tls, write_pem_cert, write_pem_key
from swarm.network.sn_client import SNClient, SwarmNetworkError

from swarm_testing import make_sites


def test_foreign_expired_wrong_role_and_revoked_certificates_are_refused(
        sites, start_sn, tmp_path):
    alpha, beta, gamma = sites
    sentinel = start_sn(alpha)

    # A site whose CA nobody here trusts.
    (stranger,) = make_sites(tmp_path / "elsewhere", [("stranger", 9)])
    with SNClient(sentinel.target, stranger.material("sl"), timeout_s=3) as foreign:
        with pytest.raises(SwarmNetworkError, match="refused our certificate") as refused:
            foreign.register("127.0.0.1:45009")
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE

    # An expired certificate from a trusted CA: refused in the TLS handshake.
    ca_key, ca_cert = beta.ca()
    now = dt.datetime.now(dt.timezone.utc)
    key, cert = issue_node_certificate(ca_key, ca_cert, role="sl", index=7, site="beta",
                                       not_before=now - dt.timedelta(days=30),
                                       not_after=now - dt.timedelta(days=1))
    write_pem_key(tmp_path / "old-key.pem", key)
    write_pem_cert(tmp_path / "old-cert.pem", cert)
    valid = load_tls(beta.cert("sl"), beta.key("sl"), beta.capath)
    expired = type(valid)(cert_pem=(tmp_path / "old-cert.pem").read_bytes(),
                          key_pem=(tmp_path / "old-key.pem").read_bytes(),
                          ca_bundle_pem=valid.ca_bundle_pem, identity=valid.identity)
    with SNClient(sentinel.target, expired, timeout_s=3) as stale:
        with pytest.raises(SwarmNetworkError, match="refused our certificate"):
            stale.register("127.0.0.1:45007")
    sentinel.proc.wait_for("certificate has expired", timeout_s=5)
    sentinel.proc.wait_for("unable to get local issuer certificate", timeout_s=5)

    # Wrong role: an SL certificate may not act as an SN, an SN one not as an SL.
    with SNClient(sentinel.target, alpha.material("sl")) as sl:
        with pytest.raises(SwarmNetworkError, match="role 'sl' may not call JoinNetwork") as denied:
            sl.join_network("0x" + "11" * 20, "127.0.0.1:45100")
        assert denied.value.code == grpc.StatusCode.PERMISSION_DENIED
        with pytest.raises(SwarmNetworkError, match="may not call Revoke"):
            sl.revoke(gamma.material("sl").identity.fingerprint, "not mine to revoke")
    with SNClient(sentinel.target, beta.material("sn")) as sn:
        with pytest.raises(SwarmNetworkError, match="role 'sn' may not call CheckIn"):
            sn.check_in(1, 10, hashlib.sha256(b"x").digest())
    sentinel.proc.wait_for("may not call JoinNetwork", timeout_s=5)

    # Revocation: the administrator (swci) revokes gamma's SL certificate on the ledger.
    victim = gamma.material("sl")
    with SNClient(sentinel.target, victim) as gamma_sl:
        gamma_sl.register("127.0.0.1:45003")
        with SNClient(sentinel.target, alpha.material("swci")) as admin:
            reply = admin.revoke(victim.identity.fingerprint, "laptop stolen")
            assert reply.node_id == "gamma/sl-3"
            with pytest.raises(SwarmNetworkError, match="not 64 hex digits"):
                admin.revoke("abc", "bad fingerprint")
            members = {m.node_id: m.status for m in admin.list_peers()}
            assert members["gamma/sl-3"] == "revoked"
        with pytest.raises(SwarmNetworkError, match="revoked") as revoked:
            gamma_sl.heartbeat()
        assert revoked.value.code == grpc.StatusCode.PERMISSION_DENIED
    sentinel.proc.wait_for("revoked", timeout_s=5)
    # Everyone else still gets through.
    with SNClient(sentinel.target, alpha.material("sl")) as fine:
        assert fine.register("127.0.0.1:45001").status == "active"


def test_a_revoked_sn_cannot_join(sites, start_sn, processes):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    with SNClient(sentinel.target, alpha.material("swci")) as admin:
        admin.revoke(beta.material("sn").identity.fingerprint, "decommissioned")
    joiner = start_sn(beta, sentinel, wait=False)
    assert joiner.proc.wait_exit(60) != 0
    assert "cannot join the swarm through the sentinel" in joiner.proc.output
    assert "revoked" in joiner.proc.output
