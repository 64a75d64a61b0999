"""Never silently different weights: a node whose merged digest differs from the one the
ledger agreed records the divergence and heals from a peer (unit level: the round driver
with fakes, and the fault that makes a peer diverge)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from swarm.protos import sl_api_pb2 as pb
from swarm.protos import sn_api_pb2 as sn_pb
from swarm.tensors import Layout, block_hashes, verify_blocks

from sl_node.exchange import Fault, FaultHook, Kind, Outgoing, Peer, RoundPlan
from sl_node.exchange import ByteCounter
from sl_node.round_driver import MERGE_NO_MAJORITY, OutcomeLog, RoundDriver, read_outcomes

from test_round_driver import LAYOUT, FakeExchange, FakeSN, driver, update

AGREED = b"\x07" * 32


class DisagreeingSN(FakeSN):
    """The ledger holds another digest than ours for every round."""

    def commit_merged(self, round_number, digest):
        self.calls.append(("commit", round_number))
        return SimpleNamespace(agreed=digest == AGREED, ledger_digest=AGREED)


def test_a_divergence_is_recorded_and_healed_with_the_agreed_model(tmp_path):
    asked = []
    healed = (np.full(8, 5, np.float32), AGREED, [b"agreed"])

    def heal(plan, digest):
        asked.append((plan.round, digest))
        return healed, "peer"

    d = RoundDriver(DisagreeingSN(), FakeExchange(), ByteCounter(), "me", LAYOUT, merge=None,
                    swarm_done=lambda: False, record=OutcomeLog(tmp_path / "rounds.jsonl"),
                    wait_slice_s=0.01, heal=heal)
    outcome, merged = d.run(2, update())
    assert asked == [(2, AGREED)]
    flat, digest, hashes = merged
    assert digest == AGREED and hashes == [b"agreed"] and (flat == 5).all()
    [record] = read_outcomes(tmp_path / "rounds.jsonl")
    assert record["diverged"] is True and record["agreed"] is False
    assert record["agreed_digest"] == AGREED.hex() and record["healed_from"] == "peer"
    assert record["merged_digest"] == ("01" * 32)  # what this node had computed


def test_a_divergence_no_peer_can_heal_yet_is_recorded_as_unhealed(tmp_path):
    outcome, merged = driver(DisagreeingSN(), FakeExchange(), tmp_path).run(2, update())
    assert outcome.diverged and outcome.healed_from == ""
    assert merged[1] == b"\x01" * 32  # the caller loads the latest model before its next round


def test_an_agreed_round_is_not_a_divergence(tmp_path):
    outcome, _ = driver(FakeSN(), FakeExchange(), tmp_path).run(2, update())
    [record] = read_outcomes(tmp_path / "rounds.jsonl")
    assert record["diverged"] is False and record["agreed_digest"] == ""


def _plan(size=3):
    layout = Layout.from_weights({"w": np.zeros(3 * 16384 * 2, np.float32)})
    peers = tuple(Peer(f"n{i}", f"h:{i}", "ab", 1, b"") for i in range(size))
    return RoundPlan(1, peers, 0, layout)


def test_equivocate_merged_sends_one_peer_another_range_with_matching_hashes():
    plan = _plan()
    lo, hi = plan.byte_range(plan.me)
    data = memoryview(np.arange((hi - lo) // 4, dtype=np.float32).view(np.uint8))
    hashes = block_hashes(data, plan.shards[plan.me].start)
    header = pb.ExchangeHeader(round=1, first_block=plan.shards[plan.me].start,
                               num_blocks=len(hashes), total_bytes=len(data),
                               block_hashes=hashes)
    hook = FaultHook({Fault.EQUIVOCATE_MERGED})
    sent = {to: hook(Outgoing(Kind.MERGED, plan, to, header, data)) for to in plan.others}
    [victim], [other] = sent[plan.others[0]], sent[plan.others[1]]
    assert bytes(other.data) == bytes(data) and list(other.header.block_hashes) == hashes
    assert bytes(victim.data) != bytes(data)
    # Self-consistent: the receiver's block check cannot tell it from an honest range.
    verify_blocks(victim.data, 0, list(victim.header.block_hashes), "n0")
    assert np.isfinite(np.frombuffer(victim.data, np.float32)).all()


def test_the_shared_receiver_lands_chunks_counts_them_and_refuses_what_is_wrong():
    import pytest
    from swarm.tensors import WeightsError

    from sl_node.exchange.gate import receive_into

    def chunks(*parts):
        return [pb.ExchangeChunk(data=p) if isinstance(p, bytes) else pb.ExchangeChunk(header=p)
                for p in parts]

    counter, out = ByteCounter(), bytearray(6)
    data = receive_into(iter(chunks(b"abc", b"def")), 6, "peer", memoryview(out), counter, 100)
    assert bytes(data) == b"abcdef" and counter.received == 6
    with pytest.raises(WeightsError, match="over the limit"):
        receive_into(iter([]), 600, "peer", memoryview(bytearray(600)), counter, 100)
    with pytest.raises(WeightsError, match="second header"):
        receive_into(iter(chunks(b"abc", pb.ExchangeHeader())), 6, "peer",
                     memoryview(bytearray(6)), counter, 100)
    with pytest.raises(WeightsError, match="more bytes than announced"):
        receive_into(iter(chunks(b"abcdefg")), 6, "peer", memoryview(bytearray(6)), counter, 100)


def test_the_commit_passes_the_outgoing_hook_so_a_false_commit_can_be_injected(tmp_path):
    committed = []

    class RecordingSN(FakeSN):
        def commit_merged(self, round_number, digest):
            committed.append(digest)
            return SimpleNamespace(agreed=True, ledger_digest=digest)

    d = RoundDriver(RecordingSN(), FakeExchange(), ByteCounter(), "me", LAYOUT, merge=None,
                    swarm_done=lambda: False, record=OutcomeLog(tmp_path / "rounds.jsonl"),
                    wait_slice_s=0.01, hook=FaultHook({Fault.FALSE_COMMIT}))
    _, merged = d.run(1, update())
    assert len(committed) == 1 and committed[0] != merged[1] == b"\x01" * 32


class VerdictSN(FakeSN):
    """The SN answers CommitMerged with a typed verdict per round (default: agreed)."""

    def __init__(self, verdicts):
        super().__init__()
        self.verdicts = dict(verdicts)

    def commit_merged(self, round_number, digest):
        self.calls.append(("commit", round_number))
        verdict = self.verdicts.get(round_number, sn_pb.MERGE_AGREED)
        return SimpleNamespace(agreed=verdict == sn_pb.MERGE_AGREED, verdict=verdict,
                               ledger_digest=digest if verdict == sn_pb.MERGE_AGREED else b"")


def test_no_majority_fails_the_round_with_a_typed_reason_and_the_next_one_merges(tmp_path):
    sn = VerdictSN({2: sn_pb.MERGE_FAILED})
    outcome, merged = driver(sn, FakeExchange(), tmp_path).run(2, update())
    failed, done = read_outcomes(tmp_path / "rounds.jsonl")
    assert (failed["round"], failed["status"], failed["reason"]) == (2, "failed", MERGE_NO_MAJORITY)
    assert failed["merge_verdict"] == "failed" and not failed["diverged"]
    # The same update goes to the next round, which merges: no node kept the failed merge.
    assert outcome.round == 3 and outcome.merged and done["merge_verdict"] == "agreed"
    assert [c for c in sn.calls if c[0] == "commit"] == [("commit", 2), ("commit", 3)]


def test_a_pending_majority_is_asked_again_then_agreed(tmp_path):
    sn = VerdictSN({})
    replies = iter([sn_pb.MERGE_PENDING, sn_pb.MERGE_PENDING, sn_pb.MERGE_AGREED])
    sn.verdicts = {2: None}
    sn.commit_merged = lambda r, digest: (sn.calls.append(("commit", r)), SimpleNamespace(
        agreed=False, verdict=next(replies), ledger_digest=b""))[1]
    outcome, _ = driver(sn, FakeExchange(), tmp_path).run(2, update())
    assert [c for c in sn.calls if c[0] == "commit"] == [("commit", 2)] * 3
    assert outcome.merge_verdict == "agreed" and outcome.merged


def test_a_lasting_pending_majority_keeps_the_merge_recorded_as_unconfirmed(tmp_path):
    ticks = iter(range(0, 10_000, 20))  # 20 s a tick: the retry window passes at once
    d = RoundDriver(VerdictSN({2: sn_pb.MERGE_PENDING}), FakeExchange(), ByteCounter(), "me",
                    LAYOUT, merge=None, swarm_done=lambda: False,
                    record=OutcomeLog(tmp_path / "rounds.jsonl"), wait_slice_s=0.01,
                    clock=lambda: next(ticks))
    outcome, merged = d.run(2, update())
    [record] = read_outcomes(tmp_path / "rounds.jsonl")
    assert outcome.merged and record["merge_verdict"] == "pending"
    assert record["agreed"] is None and not record["diverged"]
    assert merged[1] == b"\x01" * 32
