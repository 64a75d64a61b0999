"""The ledger tunnel against a real sentinel process (mTLS, LedgerPeer): what an audit of
a live sentinel costs it, in requests."""
from __future__ import annotations

from web3 import Web3

from swarm.ledger.audit import build_report, read_history
from swarm.ledger.tunnel import LedgerTunnelProvider
from swarm.network.sn_client import SNClient


def test_an_audit_through_the_tunnel_asks_the_chain_id_once_and_reads_logs_in_ranges(sites, start_sn):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha)
    start_sn(beta, sentinel)  # admits beta's SN certificate: LedgerPeer serves members only
    with SNClient(sentinel.target, alpha.material("sl")) as client:
        client.register("127.0.0.1:41001")
        address = client.status().contract_address
    tunnel = LedgerTunnelProvider(f"127.0.0.1:{sentinel.p2p_port}", beta.material("sn"), timeout_s=30.0)
    try:
        history = read_history(Web3(tunnel), address, source="tunnel")
        assert {"MemberRegistered"} <= {e.name for e in history.events}
        assert build_report(history).findings == []
        # web3 asks eth_chainId before every eth_call; only the first crosses.
        assert tunnel.requests["eth_chainId"] == 1, tunnel.requests
        assert tunnel.requests["eth_call"] >= 3
        assert tunnel.requests["eth_getLogs"] == history.head_block // 1_000 + 1, tunnel.requests
        assert tunnel.is_connected()
        assert tunnel.requests["eth_chainId"] == 2  # is_connected asks the sentinel itself
    finally:
        tunnel.close()
