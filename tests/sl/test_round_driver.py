"""The round driver against a fake SN client and a fake exchange: no processes, no network."""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import numpy as np
import pytest

from swarm.network.sn_client import Reason, SwarmNetworkError
from swarm.tensors import Layout

from sl_node.exchange import ByteCounter, RoundFailed
from sl_node.round_driver import OutcomeLog, RoundDriver, Update, read_outcomes

LAYOUT = Layout.from_weights({"w": np.zeros(8, np.float32)})
DIGEST = hashlib.sha256(b"update").digest()


def participant(node_id: str, weight: int = 1):
    return SimpleNamespace(node_id=node_id, endpoint=f"{node_id}:1", fingerprint="ab",
                           weight=weight, digest=DIGEST)


class FakeSN:
    """Answers as an SN would; `script` maps (call, round) to what happens."""

    def __init__(self, sealed_after: int = 0, participants=("me", "peer"),
                 refuse: dict | None = None, forget_at: int | None = None):
        self.calls: list[tuple] = []
        self.sealed_after = sealed_after    # unsealed WaitRound slices before the seal
        self.participants = [participant(p) for p in participants]
        self.refuse = refuse or {}          # round -> SwarmNetworkError for its check-in
        self.checked_in: set[int] = set()
        self.forget_at = forget_at          # after this many waits the SN "restarts"
        self.waits = 0

    def check_in(self, round_number, weight, digest):
        self.calls.append(("check_in", round_number))
        if round_number in self.refuse:
            raise self.refuse.pop(round_number)
        self.checked_in.add(round_number)

    def wait_round(self, round_number, timeout_s, until_check_in=False):
        self.calls.append(("wait_round", round_number))
        self.waits += 1
        if self.forget_at is not None and self.waits == self.forget_at:
            self.checked_in.clear()  # lost its in-memory check-ins
        sealed = self.waits > self.sealed_after and round_number in self.checked_in
        return SimpleNamespace(round=round_number, sealed=sealed,
                               participants=self.participants if sealed else [],
                               checked_in=[], missing=["late"], min_peers=2)

    def commit_merged(self, round_number, digest):
        self.calls.append(("commit", round_number))
        return SimpleNamespace(agreed=True, ledger_digest=digest)


class FakeExchange:
    def __init__(self, fail_rounds=()):
        self.fail_rounds = set(fail_rounds)
        self.plans = []
        self.sent = []  # this node's update as handed to the exchange (None: none)

    def run(self, plan, flat, hashes, merge):
        self.plans.append(plan)
        self.sent.append(flat)
        if plan.round in self.fail_rounds:
            raise RoundFailed(f"round {plan.round}: peer did not answer")
        return (np.zeros(8, np.float32) if flat is None else flat) * 2, b"\x01" * 32, [b"h"]


def driver(sn, exchange, tmp_path, done=lambda: False):
    return RoundDriver(sn, exchange, ByteCounter(), "me", LAYOUT, merge=None, swarm_done=done,
                       record=OutcomeLog(tmp_path / "rounds.jsonl"), wait_slice_s=0.01)


def update():
    return Update(np.ones(8, np.float32), 1, DIGEST, [b"h"])


def test_a_round_runs_check_in_wait_seal_exchange_commit_and_is_recorded(tmp_path):
    sn = FakeSN()
    outcome, merged = driver(sn, FakeExchange(), tmp_path).run(3, update())
    assert [c[0] for c in sn.calls] == ["check_in", "wait_round", "commit"]
    assert outcome.status == "merged" and outcome.round == 3
    assert outcome.participants == ("me", "peer") and outcome.contributors == ("me", "peer")
    assert merged[1] == b"\x01" * 32
    [record] = read_outcomes(tmp_path / "rounds.jsonl")
    assert record["round"] == 3 and record["status"] == "merged"
    assert record["merged_digest"] == ("01" * 32) and record["agreed"] is True


def test_round_over_moves_to_the_round_the_sn_names_not_to_a_guess(tmp_path):
    over = SwarmNetworkError("anything at all", reason=Reason.ROUND_OVER, next_round=9)
    sn = FakeSN(refuse={3: over})
    outcome, _ = driver(sn, FakeExchange(), tmp_path).run(3, update())
    assert outcome.round == 9 and ("check_in", 9) in sn.calls


def test_swarm_done_from_the_sn_ends_without_a_round(tmp_path):
    done = SwarmNetworkError("text that does not matter", reason=Reason.SWARM_DONE)
    outcome, merged = driver(FakeSN(refuse={1: done}), FakeExchange(), tmp_path).run(1, update())
    assert outcome.status == "swarm_done" and merged is None
    assert read_outcomes(tmp_path / "rounds.jsonl") == []


def test_other_refusals_reach_the_caller(tmp_path):
    error = SwarmNetworkError("the swarm is done", reason=Reason.OTHER_SN)  # text lies
    with pytest.raises(SwarmNetworkError):
        driver(FakeSN(refuse={1: error}), FakeExchange(), tmp_path).run(1, update())


def test_a_failed_exchange_is_recorded_and_the_next_round_merges(tmp_path):
    outcome, _ = driver(FakeSN(), FakeExchange(fail_rounds={4}), tmp_path).run(4, update())
    assert outcome.round == 5 and outcome.status == "merged"
    records = read_outcomes(tmp_path / "rounds.jsonl")
    assert [(r["round"], r["status"]) for r in records] == [(4, "failed"), (5, "merged")]
    assert "did not answer" in records[0]["reason"]


def test_the_check_in_is_sent_again_while_waiting_so_a_restarted_sn_has_it(tmp_path):
    # The SN loses its check-ins after the first wait; without a re-sent check-in the
    # round would never seal.
    sn = FakeSN(sealed_after=2, forget_at=1)
    outcome, _ = driver(sn, FakeExchange(), tmp_path).run(1, update())
    assert outcome.status == "merged"
    assert sn.calls.count(("check_in", 1)) >= 2


def test_a_round_sealed_without_this_node_moves_on(tmp_path):
    sn = FakeSN(participants=("peer", "other"))  # round 1 seals without "me"
    calls = []
    original = sn.wait_round

    def wait_round(round_number, timeout_s, until_check_in=False):
        info = original(round_number, timeout_s)
        if round_number == 2 and info.sealed:
            info.participants = [participant("me"), participant("peer")]
        calls.append(round_number)
        return info

    sn.wait_round = wait_round
    outcome, _ = driver(sn, FakeExchange(), tmp_path).run(1, update())
    assert outcome.round == 2 and calls[:2] == [1, 2]


def test_a_single_contributor_is_recorded_as_such(tmp_path):
    sn = FakeSN()
    sn.participants = [participant("me"), participant("peer", weight=0)]
    outcome, _ = driver(sn, FakeExchange(), tmp_path).run(1, update())
    assert outcome.contributors == ("me",) and outcome.reason == "a single contributor"
    assert json.loads((tmp_path / "rounds.jsonl").read_text())["contributors"] == ["me"]


def test_an_inactive_node_registers_again_and_checks_in(tmp_path):
    inactive = SwarmNetworkError("words", reason=Reason.INACTIVE)
    sn = FakeSN(refuse={1: inactive})
    rejoined = []
    d = RoundDriver(sn, FakeExchange(), ByteCounter(), "me", LAYOUT, merge=None,
                    swarm_done=lambda: False, record=lambda outcome: None,
                    rejoin=lambda: rejoined.append(True), wait_slice_s=0.01)
    outcome, _ = d.run(1, update())
    assert rejoined == [True] and outcome.status == "merged"


@pytest.mark.parametrize("my_digest, adopted", [(b"\x00" * 32, "me"), (b"\xff" * 32, "peer")])
def test_under_the_mean_the_first_round_adopts_the_lowest_digests_model(tmp_path, my_digest,
                                                                         adopted):
    """Averaging independent random inits is a poor start: round 1 takes one model, the
    same one on every node (the lowest check-in digest), and says so in its record."""
    sn = FakeSN()
    sn.participants[0].digest = my_digest  # "me"; "peer" checked in with DIGEST
    exchange = FakeExchange()
    outcome, _ = RoundDriver(sn, exchange, ByteCounter(), "me", LAYOUT,
                             merge=SimpleNamespace(name="mean"), swarm_done=lambda: False,
                             record=OutcomeLog(tmp_path / "rounds.jsonl"),
                             wait_slice_s=0.01).run(1, update())
    assert outcome.contributors == (adopted,)
    assert outcome.reason == f"the start: every node takes {adopted}'s model" and outcome.start
    assert (exchange.sent[0] is None) == (adopted != "me")  # not adopted: sends nothing
    [plan] = exchange.plans
    assert [p.node_id for p in plan.peers if p.weight > 0] == [adopted]
    assert [p.node_id for p in plan.peers] == ["me", "peer"]  # still both take part


def test_later_rounds_and_other_merge_methods_keep_every_contributor(tmp_path):
    for round_number, name in ((2, "mean"), (1, "coordmedian")):
        sn = FakeSN()
        sn.participants[0].digest = b"\x00" * 32
        exchange = FakeExchange()
        RoundDriver(sn, exchange, ByteCounter(), "me", LAYOUT,
                    merge=SimpleNamespace(name=name), swarm_done=lambda: False,
                    record=OutcomeLog(tmp_path / f"{round_number}.jsonl"),
                    wait_slice_s=0.01).run(round_number, update())
        assert exchange.plans[0].contributors == [0, 1], (round_number, name)
