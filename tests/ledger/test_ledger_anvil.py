"""The same client flow against a real anvil process (the --ledger-url path)."""
from __future__ import annotations

import socket
import statistics
import time
from pathlib import Path

import pytest

from swarm.ledger import (
    ANVIL_DEV_KEY,
    LedgerError,
    connect_external,
    deploy_ledger,
    external_account,
    load_or_create_account,
    node_key,
    open_or_deploy,
)
from swarm.ledger.client import fund

from .conftest import SENTINEL, SLS1, SLS2, SN2, build_swarm, digest, fp

# anvil_url: tests/conftest.py's module-scoped anvil (its own process group, stopped as one).


def test_stopping_anvil_leaves_no_process(start_anvil):
    """The fixture's anvil is a Node wrapper and the binary it spawns; both must go."""
    with start_anvil() as anvil:
        names = {Path(f"/proc/{pid}/exe").resolve().name for pid in anvil.processes()}
        assert "anvil" in names, names  # the real binary is in the group we stop
    assert anvil.processes() == []


def test_connect_external_refuses_a_dead_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(LedgerError, match="^connect_external: no JSON-RPC chain"):
        connect_external(f"http://127.0.0.1:{port}", timeout=1)


def test_client_flow_on_anvil(anvil_url, tmp_path, capsys):
    w3 = connect_external(anvil_url)
    sentinel_account = external_account(w3)
    assert sentinel_account.address == w3.eth.accounts[0]  # anvil's first dev key
    assert external_account(w3, ANVIL_DEV_KEY).address == sentinel_account.address
    sn1, sn2, outsider = build_swarm(w3, tmp_path, None, sentinel_account=sentinel_account)
    # Reopening from the data dir finds the same contract.
    again = open_or_deploy(w3, tmp_path, sentinel_node_id=SENTINEL, fingerprint=fp(SENTINEL), endpoint="x",
                           account=sentinel_account)
    assert again.address == sn1.address
    assert [m.node_id for m in sn1.members()] == [SENTINEL, SN2, *SLS1, *SLS2]

    with pytest.raises(LedgerError, match="^registerNode: caller is not a member$"):
        outsider.register_node("evil/sl-1", "sl", fp("evil"), "x")
    with pytest.raises(LedgerError, match="^registerNode: fingerprint mismatch$"):
        sn1.register_node(SLS1[0], "sl", fp("forged"), "x")
    sn1.configure(2, {"merge_method": "mean"})
    with pytest.raises(LedgerError, match="^configure: already configured$"):
        sn2.configure(2, "{}")
    sn1.check_in(1, SLS1[:2], [1, 2], [digest("a"), digest("b")])
    with pytest.raises(LedgerError, match="^checkIn: already checked in$"):
        sn1.check_in(1, SLS1[:1], [1], [digest("a")])
    with pytest.raises(LedgerError, match="^checkIn: not controller$"):
        sn2.check_in(1, SLS1[2:], [1], [digest("c")])
    res = sn2.check_in_and_seal(1, SLS2, [3], [digest("d")], seal_ids=[*SLS1[:2], *SLS2])
    assert [e.name for e in res.events] == ["CheckedIn", "RoundSealed"]
    with pytest.raises(LedgerError, match="^seal: round already sealed$"):
        sn1.seal(1, SLS1[:2])
    assert sn1.commit_merged_batch(1, SLS1[:2], [digest("m")] * 2).named("MergeAgreed")  # 2 of 3
    mismatch = sn2.commit_merged(1, SLS2[0], digest("other"))
    assert mismatch.named("MergeMismatch")[0].args["expected"] == digest("m")
    info = sn1.round_info(1)
    assert info.participants == tuple(node_key(n) for n in [*SLS1[:2], *SLS2])
    assert info.weights == (1, 2, 3) and info.merged_digest == digest("m")
    sn1.revoke(fp(SLS2[0]), "test")
    with pytest.raises(LedgerError, match="^checkIn: member revoked$"):
        sn2.check_in(2, SLS2, [1], [digest("e")])
    events, nxt = sn1.events_since(0)
    names = [e.name for e in events]
    assert names.count("MemberRegistered") == 6 and names[-1] == "Revoked" and "MergeMismatch" in names
    assert sn1.events_since(nxt) == ([], nxt)

    # Latency of the single-SN fast path with 8 peers.
    peers = [f"site{i}/sl-7" for i in range(8)]
    for name in peers:
        sn1.register_node(name, "sl", fp(name), "x")
    times = []
    for rnd in range(2, 12):
        t0 = time.perf_counter()
        sn1.check_in_and_seal(rnd, peers, [1] * 8, [digest(rnd)] * 8)
        times.append(time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\n[ledger] anvil checkInAndSeal(8 ids): median {statistics.median(times) * 1000:.1f} ms")


def test_fresh_sn_key_is_funded_by_the_sentinel(anvil_url, tmp_path):
    w3 = connect_external(anvil_url)
    sentinel = external_account(w3)
    joiner = load_or_create_account(tmp_path / "joiner.key")
    assert w3.eth.get_balance(joiner.address) == 0
    fund(w3, sentinel, joiner.address, 10**18)
    assert w3.eth.get_balance(joiner.address) == 10**18
    # An unfunded key cannot pay for anything; the error says which call failed.
    with pytest.raises(LedgerError, match="^deploy: could not send transaction"):
        deploy_ledger(w3, load_or_create_account(tmp_path / "broke.key"), "x/sn-1", fp("x"), "e")
