"""The SN's typed refusals and liveness rules, on a real run-sn process over mTLS."""

from __future__ import annotations

import hashlib
import signal
import threading
import time

import grpc
import pytest

from swarm.network.sn_client import SNClient, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb

from sn_node.service import MAX_PARKED_PER_CALLER
from swarm_testing import commit_together


def digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def status_of(client: SNClient, node_id: str) -> str:
    return {m.node_id: m.status for m in client.list_peers()}[node_id]


def refused(call) -> SwarmNetworkError:
    with pytest.raises(SwarmNetworkError) as error:
        call()
    return error.value


def test_round_over_too_far_ahead_busy_and_swarm_done(sites, start_sn):
    alpha, beta, _ = sites
    sn = start_sn(alpha, None, "--liveness-timeout", "30")
    a = SNClient(sn.target, alpha.material("sl"), retry_s=0)
    b = SNClient(sn.target, beta.material("sl"), retry_s=0)
    garbage = refused(lambda: a.register("0.0.0.0:1"))
    assert garbage.reason == pb.BAD_REQUEST and "peers cannot dial" in str(garbage)
    a.register("127.0.0.1:45101")
    b.register("127.0.0.1:45102")
    a.configure(2)
    a.check_in(1, 50, digest("a1"))
    b.check_in(1, 50, digest("b1"))
    assert a.wait_round(1, 20).sealed
    assert all(r.agreed for r in commit_together(1, (a, digest("m1")), (b, digest("m1"))))

    late = refused(lambda: b.check_in(1, 50, digest("other")))
    assert (late.reason, late.next_round) == (pb.ROUND_OVER, 2)
    for call in (lambda: a.check_in(9, 50, digest("a9")), lambda: a.wait_round(10**9, 60)):
        started = time.monotonic()
        far = refused(call)
        assert (far.reason, far.next_round) == (pb.TOO_FAR_AHEAD, 2)
        assert time.monotonic() - started < 5  # refused at once, nothing parked

    # One caller parks a few WaitRound calls at most; beyond that, BUSY at once.
    parked = [threading.Thread(target=lambda: _quietly(lambda: b.wait_round(2, 8)))
              for _ in range(MAX_PARKED_PER_CALLER)]
    for thread in parked:
        thread.start()
    time.sleep(1.5)
    busy = refused(lambda: b.wait_round(2, 8))
    assert busy.reason == pb.BUSY and busy.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert a.wait_round(2, 0.1).sealed is False  # another caller is not affected
    for thread in parked:
        thread.join(20)

    assert a.mark_finished().finished == 1
    assert a.mark_finished().finished == 1  # a retried call changes nothing
    assert b.mark_finished().finished == 2
    done = refused(lambda: a.check_in(2, 50, digest("a2")))
    assert done.reason == pb.SWARM_DONE
    a.close()
    b.close()


def _quietly(call) -> None:
    try:
        call()
    except SwarmNetworkError:
        pass


def test_a_node_registering_long_after_its_sn_started_stays_active(sites, start_sn):
    alpha, _, _ = sites
    sn = start_sn(alpha, None, "--liveness-timeout", "2")
    time.sleep(4)  # the SN's own start is long past the liveness timeout
    with SNClient(sn.target, alpha.material("sl"), retry_s=0) as late:
        late.register("127.0.0.1:45201")
        for _ in range(6):  # heartbeats at half the timeout, as SL nodes send them
            time.sleep(0.5)
            assert status_of(late, "alpha/sl-1") == "active"
            late.heartbeat()
    assert "has sent no heartbeat" not in sn.proc.output


def test_a_node_marked_inactive_before_an_sn_restart_is_active_on_its_next_heartbeat(
        sites, start_sn):
    alpha, beta, _ = sites
    sn = start_sn(alpha, None, "--liveness-timeout", "1")
    with SNClient(sn.target, beta.material("sl"), retry_s=0) as quiet:
        quiet.register("127.0.0.1:45301")
        deadline = time.monotonic() + 30
        while status_of(quiet, "beta/sl-2") != "inactive":  # on the ledger, not just logged
            assert time.monotonic() < deadline
            time.sleep(0.2)
    sn.proc.kill(signal.SIGKILL)
    restarted = start_sn(alpha, None, "--liveness-timeout", "30", data_dir=sn.data_dir,
                         api_port=sn.api_port, p2p_port=sn.p2p_port)
    with SNClient(restarted.target, beta.material("sl"), retry_s=0) as back:
        assert status_of(back, "beta/sl-2") == "inactive"
        back.heartbeat()
        assert status_of(back, "beta/sl-2") == "active"


def test_a_restart_between_a_seal_and_its_merge_keeps_the_latest_merged_model(
        sites, start_sn):
    alpha, beta, _ = sites
    sn = start_sn(alpha)
    a = SNClient(sn.target, alpha.material("sl"), retry_s=0)
    b = SNClient(sn.target, beta.material("sl"), retry_s=0)
    a.register("127.0.0.1:45401")
    b.register("127.0.0.1:45402")
    a.configure(2)
    # As nodes do: each commits round k before it checks in for k + 1 (the contract
    # counts a node a participant of the last round it was sealed into).
    for round_number in (1, 2):
        a.check_in(round_number, 50, digest(f"a{round_number}"))
        b.check_in(round_number, 50, digest(f"b{round_number}"))
        assert a.wait_round(round_number, 20).sealed
        if round_number == 1:
            assert all(r.agreed for r in commit_together(1, (a, digest("m1")), (b, digest("m1"))))
    # Round 2 is sealed, not yet merged, when the SN dies.
    a.close()
    b.close()
    sn.proc.kill(signal.SIGKILL)
    restarted = start_sn(alpha, None, data_dir=sn.data_dir, api_port=sn.api_port,
                         p2p_port=sn.p2p_port)
    with SNClient(restarted.target, alpha.material("sl"), retry_s=0) as again:
        status = again.status()
        assert (status.last_sealed_round, status.has_merged_round) == (2, True)
        assert (status.latest_merged_round, status.latest_merged_digest) == (1, digest("m1"))
        # Round 1 is no longer in the restarted SN's memory: read back from the ledger.
        info = again.wait_round(1, 0.1)
        assert info.sealed and info.merged_digest == digest("m1")
        assert {p.node_id for p in info.participants} == {"alpha/sl-1", "beta/sl-2"}
        with SNClient(restarted.target, beta.material("sl"), retry_s=0) as b_again:
            replies = commit_together(2, (again, digest("m2")), (b_again, digest("m2")))
        assert all(r.agreed and r.verdict == pb.MERGE_AGREED for r in replies)
