"""run-sn as real processes on loopback: a sentinel, a joining SN, SL-role clients over mTLS."""

from __future__ import annotations

import hashlib
import signal
import time

import grpc
import pytest

from swarm.network.sn_client import SNClient, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb

from swarm_testing import READY, commit_together


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def eventually(check, timeout_s: float = 10.0, interval_s: float = 0.1):
    """Retries check() until it returns a truthy value or raises no AssertionError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
            if result:
                return result
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)


def test_an_sl_client_registers_through_either_sn_and_both_see_the_same_ledger(sites, start_sn):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    joiner = start_sn(beta, sentinel)

    with SNClient(sentinel.target, alpha.material("sl")) as via_sentinel, \
            SNClient(joiner.target, beta.material("sl")) as via_joiner:
        a = via_sentinel.register("127.0.0.1:41001")
        b = via_joiner.register("127.0.0.1:41002")
        assert (a.node_id, a.role, a.status) == ("alpha/sl-1", "sl", "active")
        assert b.node_id == "beta/sl-2"
        assert a.fingerprint == alpha.material("sl").identity.fingerprint

        s1, s2 = via_sentinel.status(), via_joiner.status()
        assert s1.contract_address == s2.contract_address
        assert (s1.sentinel, s1.ledger_kind) == (True, "embedded")
        assert (s2.sentinel, s2.ledger_kind) == (False, "tunnel")

        def both_see_both(client):
            ids = {m.node_id: m for m in client.list_peers(role="sl")}
            assert set(ids) == {"alpha/sl-1", "beta/sl-2"}, ids
            assert ids["beta/sl-2"].endpoint == "127.0.0.1:41002"
            return True

        eventually(lambda: both_see_both(via_sentinel))
        eventually(lambda: both_see_both(via_joiner))
        sns = {m.node_id for m in via_joiner.list_peers(role="sn")}
        assert sns == {"alpha/sn-1", "beta/sn-2"}


def test_a_round_is_sealed_once_min_peers_check_in_across_two_sn_nodes(sites, start_sn):
    alpha, beta, gamma = sites
    sentinel = start_sn(alpha)
    joiner = start_sn(beta, sentinel)
    a = SNClient(sentinel.target, alpha.material("sl"))
    b = SNClient(joiner.target, beta.material("sl"))
    c = SNClient(sentinel.target, gamma.material("sl"))
    try:
        for client, port in ((a, 1), (b, 2), (c, 3)):
            client.register(f"127.0.0.1:4200{port}")
        assert a.configure(2, '{"sync_frequency": 8}').min_peers == 2
        # A second configure does not change the ledger's configuration.
        assert b.configure(3).min_peers == 2

        # Not sealed with only one check-in: WaitRound says who is missing.
        a.check_in(1, 10, digest("a1"))
        pending = a.wait_round(1, timeout_s=0.3)
        assert not pending.sealed
        assert "alpha/sl-1" in pending.checked_in
        assert {"beta/sl-2", "gamma/sl-3"} <= set(pending.missing)

        b.check_in(1, 20, digest("b1"))
        c.check_in(1, 30, digest("c1"))
        infos = [cl.wait_round(1, timeout_s=20) for cl in (a, b, c)]
        for info in infos:
            assert info.sealed
            got = {p.node_id: (p.weight, p.digest) for p in info.participants}
            assert got == {"alpha/sl-1": (10, digest("a1")), "beta/sl-2": (20, digest("b1")),
                           "gamma/sl-3": (30, digest("c1"))}
        assert [p.node_id for p in infos[0].participants] == \
            [p.node_id for p in infos[1].participants]
        endpoints = {p.node_id: p.endpoint for p in infos[0].participants}
        assert endpoints["beta/sl-2"] == "127.0.0.1:42002"

        merged = digest("merged-1")
        # Two of three is a strict majority: both wait for it, then hear it agreed.
        for reply in commit_together(1, (a, merged), (b, merged)):
            assert reply.agreed and reply.ledger_digest == merged
        disagree = c.commit_merged(1, digest("something else"))
        assert not disagree.agreed and disagree.ledger_digest == merged
        assert disagree.verdict == pb.MERGE_DISAGREED
        eventually(lambda: b.status().latest_merged_digest == merged)
        assert a.status().last_sealed_round == 1

        # The round is over: a late check-in is told which round to join.
        with pytest.raises(SwarmNetworkError, match="round 1 .*check in for round 2") as late:
            a.check_in(1, 10, digest("a1-again"))
        assert late.value.code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        for client in (a, b, c):
            client.close()


def test_bad_check_ins_are_refused_with_a_reason(sites, start_sn):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    joiner = start_sn(beta, sentinel)
    a = SNClient(sentinel.target, alpha.material("sl"))
    try:
        with pytest.raises(SwarmNetworkError, match="not registered: call Register first"):
            a.check_in(1, 10, digest("x"))
        with pytest.raises(SwarmNetworkError, match="not HOST:PORT"):
            a.register("no-port-here")
        a.register("127.0.0.1:43001")
        with pytest.raises(SwarmNetworkError, match="not configured yet"):
            a.check_in(1, 10, digest("x"))
        a.configure(2)
        cases = [((1, 101, digest("x")), "weight 101 is outside 0..100"),
                 ((1, 10, b"short"), "32-byte SHA-256, got 5 bytes"),
                 ((1, 10, bytes(32)), "non-zero"),
                 ((0, 10, digest("x")), "numbered from 1")]
        for args, message in cases:
            with pytest.raises(SwarmNetworkError, match=message) as bad:
                a.check_in(*args)
            assert bad.value.code == grpc.StatusCode.INVALID_ARGUMENT
        a.check_in(1, 10, digest("x"))
        with pytest.raises(SwarmNetworkError, match="one update per node"):
            a.check_in(1, 10, digest("y"))
        # Registered through the sentinel: the other SN cannot check it in.
        with SNClient(joiner.target, alpha.material("sl")) as elsewhere:
            eventually(lambda: any(m.node_id == "alpha/sl-1" for m in elsewhere.list_peers()))
            with pytest.raises(SwarmNetworkError, match="through another SN node"):
                elsewhere.check_in(2, 10, digest("x"))
        with pytest.raises(SwarmNetworkError, match="may not call CommitMerged|not sealed"):
            a.commit_merged(5, digest("m"))
    finally:
        a.close()
    # The SN survived all of it.
    with SNClient(sentinel.target, alpha.material("swci")) as admin:
        assert admin.status().members >= 3


def test_the_sentinel_keeps_its_ledger_across_sigkill(sites, start_sn):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    a = SNClient(sentinel.target, alpha.material("sl"))
    b = SNClient(sentinel.target, beta.material("sl"))
    a.register("127.0.0.1:44001")
    b.register("127.0.0.1:44002")
    a.configure(2, '{"epochs": 3}')
    for round_number in (1, 2):
        a.check_in(round_number, 50, digest(f"a{round_number}"))
        b.check_in(round_number, 50, digest(f"b{round_number}"))
        assert a.wait_round(round_number, 20).sealed
        m = digest(f"m{round_number}")
        assert all(r.agreed for r in commit_together(round_number, (a, m), (b, m)))
    before = a.status()
    a.close()
    b.close()

    sentinel.proc.kill(signal.SIGKILL)
    restarted = start_sn(alpha, None, data_dir=sentinel.data_dir, api_port=sentinel.api_port,
                         p2p_port=sentinel.p2p_port)
    assert "reopened the ledger" in restarted.proc.output
    with SNClient(restarted.target, alpha.material("sl")) as again:
        after = again.status()
        assert after.contract_address == before.contract_address
        assert (after.last_sealed_round, after.min_peers, after.config_json) == \
            (2, 2, '{"epochs": 3}')
        assert after.latest_merged_digest == digest("m2")
        peers = {m.node_id: m.endpoint for m in again.list_peers(role="sl")}
        assert peers == {"alpha/sl-1": "127.0.0.1:44001", "beta/sl-2": "127.0.0.1:44002"}
        # Round 2 is still sealed for its participants; training goes on with round 3.
        info = again.wait_round(2, 1)
        assert info.sealed and info.merged_digest == digest("m2")
        again.check_in(3, 50, digest("a3"))


def test_the_ready_line_is_what_users_wait_for(sites, start_sn):
    alpha = sites[0]
    sentinel = start_sn(alpha)
    line = sentinel.proc.wait_for(READY)
    assert line.strip() == f"Starting SWARM-API-SERVER on port: {sentinel.api_port}"
