"""The same SN flow with the ledger on an external JSON-RPC chain (anvil, via --ledger-url)."""

from __future__ import annotations

import hashlib

from swarm.network.sn_client import SNClient
from swarm_testing import commit_together

# anvil_url: tests/conftest.py's module-scoped anvil (skips when anvil is not installed).


def test_two_sn_nodes_on_anvil_register_and_seal_a_round(sites, start_sn, anvil_url):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha, None, "--ledger-url", anvil_url)
    joiner = start_sn(beta, sentinel, "--ledger-url", anvil_url)
    with SNClient(sentinel.target, alpha.material("sl")) as a, \
            SNClient(joiner.target, beta.material("sl")) as b:
        assert a.status().ledger_kind == "external"
        assert b.status().ledger_kind == "external"
        assert a.status().chain_id == 31337  # anvil's default chain id
        a.register("127.0.0.1:46001")
        b.register("127.0.0.1:46002")
        a.configure(2)
        a.check_in(1, 40, hashlib.sha256(b"a").digest())
        b.check_in(1, 60, hashlib.sha256(b"b").digest())
        for client in (a, b):
            info = client.wait_round(1, 20)
            assert info.sealed
            assert {p.node_id: p.weight for p in info.participants} == \
                {"alpha/sl-1": 40, "beta/sl-2": 60}
        m = hashlib.sha256(b"m").digest()
        assert all(r.agreed for r in commit_together(1, (a, m), (b, m)))


def test_a_joiner_learns_the_ledger_url_from_the_sentinel(sites, start_sn, anvil_url):
    alpha, beta, _ = sites
    sentinel = start_sn(alpha, None, "--ledger-url", anvil_url)
    joiner = start_sn(beta, sentinel)  # no --ledger-url of its own
    with SNClient(joiner.target, beta.material("sl")) as b:
        status = b.status()
        assert status.ledger_kind == "external" and status.chain_id == 31337
        assert b.register("127.0.0.1:46102").status == "active"
