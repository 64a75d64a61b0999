"""Replicated shard ownership (the session's shardReplicas): the plan's owners, the
majority rule, and four SL peers over real gRPC and mutual TLS with one lying owner
(Fault.WRONG_PARTIAL through the outgoing hook): unreplicated, the honest peers take
its lie; with three owners per shard they outvote it and end with the true merge."""

from __future__ import annotations

import json

import numpy as np
import pytest

from swarm.callback import parse_params
from swarm.merging import get_merge
from swarm.session import Session, SessionFormatError
from swarm.tensors import Layout, block_hashes, weights_digest

from sl_node.exchange import FailReason, Fault, Inboxes, Peer, RoundFailed, RoundPlan
from sl_node.exchange.runner import take_majority

from swarm_testing import make_sites
from test_exchange import _node, _started, _stop_nodes, run_all  # noqa: F401

ELEMENTS = 250_000  # 1 MB of float32: every one of four peers owns several blocks


def _peers(n: int) -> tuple[Peer, ...]:
    return tuple(Peer(f"n{i}", f"127.0.0.1:{i}", f"{i:02x}", 1, b"") for i in range(n))


def _layout(elements: int = ELEMENTS) -> Layout:
    return Layout.from_weights({"w": np.zeros(elements, np.float32)})


# --- the parameter and the session ----------------------------------------------------

def test_shard_replicas_is_a_validated_callback_parameter_recorded_in_the_session():
    params = parse_params(syncFrequency=2, minPeers=3, shardReplicas=3)
    assert params.shard_replicas == 3
    assert parse_params(syncFrequency=2, minPeers=3).shard_replicas == 1
    for bad in (0, -1, True, 2.0, "3"):
        with pytest.raises(ValueError, match="shardReplicas"):
            parse_params(syncFrequency=2, minPeers=3, shardReplicas=bad)
    with pytest.raises(ValueError, match="shardReplicas 5 is not an integer from 1 to 4"):
        parse_params(syncFrequency=2, minPeers=3, maxPeers=4, shardReplicas=5)
    # The Hello's config JSON carries it into the session the ledger records.
    asked = Session.from_hello(json.loads(params.to_config_json()), "ab" * 32)
    recorded = Session.from_json(asked.to_json(), 3)
    assert recorded.shard_replicas == 3
    assert Session.from_json(json.dumps({"merge_method": "mean"}), 3).shard_replicas == 1
    with pytest.raises(SessionFormatError, match="shardReplicas"):
        Session.from_json(json.dumps({"shard_replicas": 0}), 3)
    # Other owners per shard is another exchange: a node asking for it cannot join.
    [mismatch] = recorded.mismatches(Session(min_peers=3, layout_fingerprint="ab" * 32))
    assert mismatch.name == "shardReplicas" and mismatch.refused


# --- the plan -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 2, 3, 4, 7])
@pytest.mark.parametrize("replicas", [1, 2, 3, 5])
def test_every_shard_has_r_distinct_owners_every_node_the_same_and_each_owns_r(n, replicas):
    layout = _layout(4096)
    plans = [RoundPlan(3, _peers(n), me, layout, replicas) for me in range(n)]
    r = min(replicas, n)  # fewer participants than replicas: every one owns every shard
    assert all(p.r == r for p in plans)
    owners = [plans[0].owners(s) for s in range(n)]
    for plan in plans[1:]:  # deterministic: the same owners whoever computes them
        assert [plan.owners(s) for s in range(n)] == owners
    for s, shard_owners in enumerate(owners):
        assert len(set(shard_owners)) == r and shard_owners[0] == s  # primary first
    for i in range(n):  # balanced: r shards each, and owned() agrees with owners()
        mine = plans[0].owned(i)
        assert len(mine) == r and mine[0] == (i, 0)
        assert sorted(s for s, _ in mine) == sorted(s for s in range(n) if i in owners[s])
        assert all(plans[0].rank(i, s) == k == owners[s].index(i) for s, k in mine)
    if replicas == 1:
        assert owners == [(s,) for s in range(n)]  # unreplicated: as before


def test_replicas_below_one_are_refused():
    with pytest.raises(ValueError):
        RoundPlan(1, _peers(3), 0, _layout(), 0)


# --- the majority, with a fake round's buffers ---------------------------------------

def _gathered(plan: RoundPlan, ranges_by_owner: dict[int, np.ndarray]):
    """An inbox whose merged buffers hold every shard's range from each of its owners
    (the truth, or what ranges_by_owner says that owner sent), with their hashes."""
    inbox = Inboxes().begin(plan.round)
    inbox.set_plan(plan)
    inbox.result[:] = 0
    ranges = {}
    for s in range(plan.size):
        for k, owner in enumerate(plan.owners(s)):
            buffer = inbox.merged_buffer(s, k)
            values = np.frombuffer(buffer, dtype=np.float32)
            lo, hi = plan.byte_range(s)
            values[:] = ranges_by_owner.get(owner, np.arange(plan.layout.size, dtype=np.float32))[
                lo // 4:hi // 4]
            ranges[(s, owner)] = block_hashes(buffer, plan.shards[s].start)
    return inbox, ranges


def test_the_majority_replaces_an_outvoted_primary_and_names_it():
    plan = RoundPlan(1, _peers(3), 1, _layout(), replicas=3)
    truth = np.arange(plan.layout.size, dtype=np.float32)
    inbox, ranges = _gathered(plan, {0: truth * 1.5})  # n0 lies about every shard
    hashes, outvoted = take_majority(plan, inbox, ranges)
    assert np.array_equal(inbox.result, truth)  # shard 0's primary (the liar) overruled
    assert list(outvoted) == ["n0"]
    assert hashes == block_hashes(memoryview(truth.view(np.uint8)), 0)
    assert inbox.replica_results == []  # the replica buffers go once the majority is in


def test_no_strict_majority_fails_the_round_with_a_typed_reason():
    plan = RoundPlan(1, _peers(4), 0, _layout(), replicas=2)
    truth = np.arange(plan.layout.size, dtype=np.float32)
    inbox, ranges = _gathered(plan, {3: truth + 1})  # 1 against 1 on shards 2 and 3
    with pytest.raises(RoundFailed) as failed:
        take_majority(plan, inbox, ranges)
    assert failed.value.reason is FailReason.NO_MAJORITY
    assert "shard 2" in str(failed.value) and failed.value.blamed == ()


def test_unreplicated_takes_the_one_owner_as_before():
    plan = RoundPlan(1, _peers(3), 0, _layout())
    truth = np.arange(plan.layout.size, dtype=np.float32)
    inbox, ranges = _gathered(plan, {2: truth * 2})
    hashes, outvoted = take_majority(plan, inbox, ranges)
    assert outvoted == {} and not np.array_equal(inbox.result, truth)  # nobody to outvote
    assert hashes == sum((ranges[(s, s)] for s in range(3)), [])


# --- four peers over real gRPC ---------------------------------------------------------

@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("four"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])


def _run(sites, replicas: int, method: str = "mean", liar: int | None = None, seed: int = 0):
    nodes = [_node(site, 3.0, faults=[Fault.WRONG_PARTIAL] if i == liar else ())
             for i, site in enumerate(sites)]
    _started.extend(nodes)
    for node in nodes:
        node.exchange.replicas = replicas  # as the node sets it from the session
    rng = np.random.default_rng(seed)
    vectors = [rng.standard_normal(ELEMENTS).astype(np.float32) for _ in nodes]
    layout = Layout.from_weights({"w": vectors[0]})
    peers = tuple(Peer(n.name, n.endpoint, n.fingerprint, 1, weights_digest(layout, v)[0])
                  for n, v in zip(nodes, vectors))
    plans = [RoundPlan(1, peers, i, layout) for i in range(len(nodes))]
    results = run_all(nodes, plans, vectors, get_merge(method))
    return nodes, vectors, layout, results


def test_unreplicated_the_honest_peers_all_take_the_lying_owners_range(four_sites):
    _, vectors, layout, results = _run(four_sites, 1, liar=3)
    honest = [r.merged for r in results[:3]]
    assert all(np.array_equal(honest[0], m) for m in honest[1:])  # identical, and wrong:
    expected = np.mean(np.stack(vectors).astype(np.float64), axis=0).astype(np.float32)
    assert not np.allclose(honest[0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(results[3].merged, expected, rtol=1e-5, atol=1e-6)  # its own


def test_three_owners_per_shard_outvote_the_lying_owner(four_sites):
    nodes, vectors, layout, results = _run(four_sites, 3, liar=3)
    assert not any(isinstance(r, Exception) for r in results), results
    expected = np.mean(np.stack(vectors).astype(np.float64), axis=0).astype(np.float32)
    for r in results:  # the liar too: it outvotes nobody, but takes the majority
        assert np.array_equal(r.merged, results[0].merged)
        assert r.digest == results[0].digest
    np.testing.assert_allclose(results[0].merged, expected, rtol=1e-5, atol=1e-6)
    assert all(list(r.outvoted) == ["delta/sl-4"] for r in results[:3]), results


def test_two_owners_per_shard_cannot_outvote_a_liar_and_every_peer_fails_alike(four_sites):
    _, _, _, results = _run(four_sites, 2, liar=3)
    assert all(isinstance(r, RoundFailed) and r.reason is FailReason.NO_MAJORITY
               for r in results[:3]), results


@pytest.mark.parametrize("method", ["geomedian", "krum"])
def test_replicas_merge_distance_methods_bit_identically_to_one_owner(four_sites, method):
    # A replica's merge replays the primaries' all-reduced sums: the same bytes.
    _, _, _, one = _run(four_sites, 1, method, seed=5)
    nodes, _, layout, three = _run(four_sites, 3, method, seed=5)
    assert not any(isinstance(r, Exception) for r in one + three), one + three
    assert all(r.digest == one[0].digest for r in one + three)
    assert all(r.outvoted == {} for r in three)


def test_three_owners_cost_three_times_the_bytes(four_sites):
    sent = {}
    for replicas in (1, 3):
        nodes, _, layout, results = _run(four_sites, replicas, seed=7)
        assert not any(isinstance(r, Exception) for r in results), results
        sent[replicas] = [n.counter.sent / layout.nbytes for n in nodes]
        for node in list(_started):
            node.server.stop(0)
            node.exchange.close()
        _started.clear()
    # 2·(N−1)/N = 1.5 model sizes per node for N = 4, r times that replicated.
    assert all(1.4 < s < 1.6 for s in sent[1]), sent
    # Per node the shards' sizes differ by a block; all together exactly r times.
    assert 2.95 < sum(sent[3]) / sum(sent[1]) < 3.05, sent
    print(f"model sizes sent per node and round, N=4, 1 MB: r=1 {sent[1]}, r=3 {sent[3]}")
