"""Liveness and the SN-to-SN ledger gate, on real run-sn processes."""

from __future__ import annotations

import json
import time

import grpc
import pytest

from swarm.network.sn_client import SNClient
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc

from test_run_sn import eventually


def status_of(client: SNClient, node_id: str) -> str:
    return {m.node_id: m.status for m in client.list_peers()}[node_id]


def test_a_silent_sl_node_is_marked_inactive_and_comes_back_with_a_heartbeat(sites, start_sn):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha, None, "--liveness-timeout", "1")
    with SNClient(sentinel.target, alpha.material("sl")) as quiet, \
            SNClient(sentinel.target, beta.material("sl")) as chatty:
        quiet.register("127.0.0.1:47001")
        chatty.register("127.0.0.1:47002")
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:  # chatty keeps beating, quiet says nothing
            chatty.heartbeat()
            time.sleep(0.2)
        eventually(lambda: status_of(chatty, "alpha/sl-1") == "inactive", timeout_s=5)
        assert status_of(chatty, "beta/sl-2") == "active"
        chatty.heartbeat()  # alive within the 1 s timeout, however loaded the machine is
        peers = {m.node_id: m.alive for m in chatty.list_peers(role="sl")}
        assert peers == {"alpha/sl-1": False, "beta/sl-2": True}
        quiet.heartbeat()
        assert status_of(chatty, "alpha/sl-1") == "active"
    sentinel.proc.wait_for("alpha/sl-1 has sent no heartbeat")
    sentinel.proc.wait_for("alpha/sl-1 is back: marking it active")


def _ledger_call(target: str, material, method: str, params: list) -> dict:
    channel = material.secure_channel(target, peer_role="sn")
    try:
        stub = pb_grpc.LedgerPeerStub(channel)
        payload = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method,
                              "params": params}).encode()
        return json.loads(stub.Call(pb.LedgerRpcRequest(payload=payload), timeout=10).payload)
    finally:
        channel.close()


def test_only_admitted_sn_nodes_reach_the_embedded_chain(sites, start_sn):
    alpha, beta, gamma = sites
    sentinel = start_sn(alpha)
    start_sn(beta, sentinel)  # admitted through JoinNetwork
    ledger_port = f"127.0.0.1:{sentinel.p2p_port}"

    answer = _ledger_call(ledger_port, beta.material("sn"), "eth_blockNumber", [])
    assert int(answer["result"], 16) > 0
    # Unlocked-account methods never pass, even for an admitted SN.
    refused = _ledger_call(ledger_port, beta.material("sn"), "eth_sendTransaction", [{}])
    assert "eth_sendTransaction" in refused["error"]["message"]

    with pytest.raises(grpc.RpcError) as not_admitted:  # a trusted SN cert, never admitted
        _ledger_call(ledger_port, gamma.material("sn"), "eth_blockNumber", [])
    assert not_admitted.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "call JoinNetwork first" in not_admitted.value.details()
    with pytest.raises(grpc.RpcError) as wrong_role:
        _ledger_call(ledger_port, gamma.material("sl"), "eth_blockNumber", [])
    assert wrong_role.value.code() == grpc.StatusCode.PERMISSION_DENIED
