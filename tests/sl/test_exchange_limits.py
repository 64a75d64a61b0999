"""No authenticated peer can exhaust an SL node: pushes for far-future rounds are
refused at once, calls parked waiting for a round are bounded per peer, late
pushes of a finished round are refused, and honest rounds keep merging meanwhile."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

from swarm.merging import get_merge
from swarm.protos import sl_api_pb2 as pb
from swarm.identity import Authorizer
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.protos import sn_api_pb2 as pb_sn
from swarm.tensors import Layout, weights_digest

from sl_node.exchange.gate import MAX_PARKED_PER_PEER, Revocations

from test_exchange import _node, _nodes, _stop_nodes, flats, peers, plans, run_all  # noqa: F401


def _flood(stub, round_number: int, calls: int) -> list[grpc.StatusCode]:
    def one(step):
        try:
            stub.PushPartial(pb.Partial(round=round_number, step=step, values=[1.0]), timeout=30)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()

    with ThreadPoolExecutor(calls) as pool:
        return list(pool.map(one, range(1, calls + 1)))


def test_forty_parked_calls_from_a_peer_do_not_stop_honest_rounds(sites):
    nodes = _nodes(sites)
    alpha, gamma_tls = nodes[0], sites[2].material("sl")
    alpha.inboxes.expect(1)  # alpha checked in for round 1: round 2 may be pushed already
    channel = gamma_tls.secure_channel(alpha.endpoint, "sl")
    stub = pb_grpc.SwarmLearningPeerStub(channel)
    try:
        with ThreadPoolExecutor(2) as pool:
            far = pool.submit(_flood, stub, 9, 40)      # far ahead: refused at once
            parked = pool.submit(_flood, stub, 2, 40)   # next round: parked, bounded
            vectors = flats(11)
            layout = Layout.from_weights({"w": vectors[0]})
            results = run_all(nodes, plans(nodes, vectors, layout), vectors, get_merge("mean"))
            assert not any(isinstance(r, Exception) for r in results), results
            assert all(np.array_equal(results[0][0], r[0]) for r in results)
            far_codes = far.result(5)
            assert set(far_codes) == {grpc.StatusCode.FAILED_PRECONDITION}
            parked_codes = parked.result(60)
        busy = parked_codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED)
        assert busy >= 40 - MAX_PARKED_PER_PEER, parked_codes
    finally:
        channel.close()


def test_a_push_for_a_finished_round_is_refused_by_name(sites, peers):
    vectors = flats(12)
    layout = Layout.from_weights({"w": vectors[0]})
    assert not any(isinstance(r, Exception)
                   for r in run_all(peers, plans(peers, vectors, layout), vectors,
                                    get_merge("mean")))
    channel = sites[2].material("sl").secure_channel(peers[0].endpoint, "sl")
    stub = pb_grpc.SwarmLearningPeerStub(channel)
    ack = stub.PushPartial(pb.Partial(round=1, step=7, values=[1.0]), timeout=10)
    assert not ack.ok and "over here" in ack.error
    # and the round's buffers are gone: only the plan is kept
    inbox = peers[0].inboxes.get(1)
    assert inbox.released and inbox.update_rows is None and inbox.result is None
    channel.close()


class FakeSN:
    def __init__(self, revoked: str):
        self.revoked = revoked

    def list_peers(self, role: str = ""):
        return [pb_sn.Member(node_id="gamma/sl-3", fingerprint=self.revoked, status="revoked"),
                pb_sn.Member(node_id="beta/sl-2", fingerprint="ab" * 32, status="active")]


def test_a_revoked_peer_is_refused_on_every_call_including_fetch_model(sites):
    gamma = sites[2].material("sl")
    revocations = Revocations()
    revocations.refresh(FakeSN(gamma.identity.fingerprint.upper()), now=0.0)
    model = np.arange(70_000, dtype=np.float32)
    layout = Layout.from_weights({"w": model})
    digest, hashes = weights_digest(layout, model)
    alpha = _node(sites[0], 3.0, authorizer=Authorizer(is_revoked=revocations.__contains__),
                  held=lambda r: (1, layout, model, hashes, digest))
    try:
        for tls, allowed in ((gamma, False), (sites[1].material("sl"), True)):
            channel = tls.secure_channel(alpha.endpoint, "sl")
            stub = pb_grpc.SwarmLearningPeerStub(channel)
            try:
                chunks = list(stub.FetchModel(pb.FetchRequest(round=0), timeout=10))
                assert allowed
                # the wire path's raw chunks parse as the usual messages
                data = b"".join(c.data for c in chunks[1:])
                assert np.array_equal(np.frombuffer(data, np.float32), model)
                assert chunks[0].header.merged_digest == digest
            except grpc.RpcError as error:
                assert not allowed and error.code() == grpc.StatusCode.PERMISSION_DENIED
                assert "revoked" in error.details()
                with pytest.raises(grpc.RpcError) as partial:
                    stub.PushPartial(pb.Partial(round=1, step=1, values=[1.0]), timeout=10)
                assert partial.value.code() == grpc.StatusCode.PERMISSION_DENIED
            finally:
                channel.close()
    finally:
        alpha.server.stop(0)
        alpha.exchange.close()
