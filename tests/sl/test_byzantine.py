"""One Byzantine participant among four, through the outgoing hook: the honest three
fail the round alike, naming it, and merge without it in the next.

Four real exchanges over gRPC and mutual TLS; the SN's receipt book (the real
`ReceiptBook` and `RoundBook`) in process behind the same interface the SN client
gives. The full swarm with processes is in test_byzantine_swarm.py.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from swarm.merging import get_merge
from swarm.network.sn_client import Reason, SwarmNetworkError
from swarm.tensors import Layout, weights_digest
from sn_node.receipts import ReceiptBook
from sn_node.rounds import RoundBook, RoundError, SealedRound

from sl_node.exchange import FailReason, Fault, Peer, ReceiptAgreement, RoundFailed, RoundPlan

from swarm_testing import make_sites
from test_exchange import ELEMENTS, _node

TIMEOUT_S = 2.0
GRACE_S = 1.0


class LocalBoard:
    """The SN client's receipt calls, answered by an in-process ReceiptBook."""

    def __init__(self, book: ReceiptBook, key: bytes):
        self._book, self._key = book, key

    def submit_receipts(self, round_number, phase, bits, remaining_s=0.0):
        try:
            self._book.submit(round_number, phase, self._key, bits, remaining_s)
        except RoundError as error:
            raise SwarmNetworkError(str(error), reason=Reason.Value(error.reason)) from None

    def wait_receipts(self, round_number, phase, timeout_s):
        frozen = self._book.wait(round_number, phase, self._key, timeout_s)
        return frozen is not None, frozen or {}


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("four"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])


@pytest.fixture
def swarm(four_sites):
    rounds = RoundBook(grace_s=0.0)
    book = ReceiptBook(rounds, grace_s=GRACE_S, exclude_rounds=2)
    keys = [bytes([i + 1]) * 32 for i in range(4)]
    made = []

    def build(faults=()):
        nodes = [_node(site, TIMEOUT_S, faults=faults if i == 3 else (),
                       agreement=ReceiptAgreement(LocalBoard(book, keys[i]), wait_s=10))
                 for i, site in enumerate(four_sites)]
        made.extend(nodes)
        return nodes

    yield build, rounds, keys
    for node in made:
        node.server.stop(0)
        node.exchange.close()


def _run(nodes, rounds, keys, round_number, members, vectors, merge):
    """Seals the round for `members` (indices) and runs their exchanges in threads."""
    layout = Layout.from_weights({"w": vectors[0]})
    digests = [weights_digest(layout, v)[0] for v in vectors]
    rounds.note_sealed(SealedRound(round_number, tuple(keys[i] for i in members),
                                   tuple(1 for _ in members), tuple(digests[i] for i in members)))
    peers = tuple(Peer(nodes[i].name, nodes[i].endpoint, nodes[i].fingerprint, 1, digests[i])
                  for i in members)
    results = {}

    def one(position, i):
        plan = RoundPlan(round_number, peers, position, layout)
        try:
            results[i] = nodes[i].exchange.run(plan, vectors[i],
                                               weights_digest(layout, vectors[i])[1], merge)
        except Exception as error:  # handed to the test
            results[i] = error

    threads = [threading.Thread(target=one, args=(p, i)) for p, i in enumerate(members)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results, time.monotonic() - started


def _vectors(seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(ELEMENTS).astype(np.float32) for _ in range(4)]


@pytest.mark.parametrize("fault,method,reason", [
    (Fault.VETO_ALL, "mean", FailReason.DISPUTE),
    (Fault.EQUIVOCATE_VOTES, "mean", FailReason.DISPUTE),
    (Fault.STALL_AFTER_SEAL, "mean", FailReason.STALLED),
    (Fault.NAN_PARTIAL, "krum", FailReason.DISPUTE),
    (Fault.WITHHOLD_MERGED, "mean", FailReason.DISPUTE),
])
def test_honest_nodes_fail_alike_naming_the_byzantine_one_then_merge_without_it(
        swarm, fault, method, reason):
    build, rounds, keys = swarm
    nodes = build([fault])
    merge = get_merge(method)
    honest = [0, 1, 2]


    results, bad_s = _run(nodes, rounds, keys, 1, [0, 1, 2, 3], _vectors(1), merge)
    for i in honest:
        error = results[i]
        assert isinstance(error, RoundFailed), (i, error)
        assert error.reason is reason and error.blamed == ("delta/sl-4",), (i, error)
    assert len({str(results[i]) for i in honest}) == 1  # the same failure everywhere
    assert rounds.excluded(2) == {keys[3]}

    vectors = _vectors(2)
    results, next_s = _run(nodes, rounds, keys, 2, honest, vectors, merge)
    merged = [results[i] for i in honest]
    assert not any(isinstance(r, Exception) for r in merged), merged
    assert all(np.array_equal(merged[0].merged, r.merged) for r in merged)
    assert len({r.digest for r in merged}) == 1
    print(f"{fault.value}: failed round {bad_s:.2f} s, next round {next_s:.2f} s")
    assert bad_s < 2 * TIMEOUT_S + GRACE_S + 5, bad_s


def test_a_duplicate_partial_is_refused_and_the_round_merges(swarm):
    build, rounds, keys = swarm
    nodes = build([Fault.DUPLICATE_PARTIAL])
    results, _ = _run(nodes, rounds, keys, 1, [0, 1, 2, 3], _vectors(3), get_merge("krum"))
    assert not any(isinstance(r, Exception) for r in results.values()), results
    assert len({r.digest for r in results.values()}) == 1
    refusals = [why for node in nodes[:3] for inbox in node.inboxes.all()
                for why in inbox.partials.refused.values()]
    assert refusals and all("delta/sl-4" in why and "second partial" in why for why in refusals)


def test_a_clean_round_of_four_merges_identically(swarm):
    build, rounds, keys = swarm
    nodes = build()
    vectors = _vectors(4)
    results, seconds = _run(nodes, rounds, keys, 1, [0, 1, 2, 3], vectors, get_merge("mean"))
    assert not any(isinstance(r, Exception) for r in results.values()), results
    assert len({r.digest for r in results.values()}) == 1
    expected = np.mean(np.stack(vectors).astype(np.float64), axis=0).astype(np.float32)
    np.testing.assert_allclose(results[0].merged, expected, rtol=1e-6)
    print(f"clean round of four: {seconds:.2f} s")


class SeveralSNBoard:
    """An SN of a swarm with several SN nodes: it keeps no receipts."""

    def submit_receipts(self, *args, **kwargs):
        raise SwarmNetworkError("several SN nodes", reason=Reason.RECEIPTS_UNAVAILABLE)

    def wait_receipts(self, *args, **kwargs):
        raise SwarmNetworkError("several SN nodes", reason=Reason.RECEIPTS_UNAVAILABLE)


def test_without_receipts_the_owners_vote_and_still_merge_alike(four_sites):
    nodes = [_node(site, TIMEOUT_S, agreement=ReceiptAgreement(SeveralSNBoard()))
             for site in four_sites]
    try:
        rounds = RoundBook(grace_s=0.0)
        keys = [bytes([i + 1]) * 32 for i in range(4)]
        vectors = _vectors(5)
        results, _ = _run(nodes, rounds, keys, 1, [0, 1, 2, 3], vectors, get_merge("mean"))
        assert not any(isinstance(r, Exception) for r in results.values()), results
        assert len({r.digest for r in results.values()}) == 1
        expected = np.mean(np.stack(vectors).astype(np.float64), axis=0).astype(np.float32)
        np.testing.assert_allclose(results[0].merged, expected, rtol=1e-6)
        # the vote went through the partials: one vote from each of the others
        assert all(len(node.inboxes.get(1).partials.claimed) == 3 for node in nodes)
    finally:
        for node in nodes:
            node.server.stop(0)
            node.exchange.close()
