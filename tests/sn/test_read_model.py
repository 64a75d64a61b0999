"""The SN's read model: fed by the ledger thread's events, read without calling the ledger."""
from __future__ import annotations

import hashlib
import threading
import time

from swarm.ledger import EmbeddedChain, Member, load_or_create_account, node_key, open_or_deploy
from swarm.ledger.client import fund
from swarm.swarm_view import NodeOutcome, Snapshot

from sn_node.directory import MemberDirectory
from sn_node.ledger_loop import LedgerLoop
from sn_node.read_model import ReadModel
from sn_node.rounds import CheckIn, RoundBook

OWN = "0x" + "11" * 20


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def fp(name: str) -> bytes:
    return hashlib.sha256(name.encode()).digest()


def member(name: str, status: int = 1) -> Member:
    return Member(node_key(name), name, 2, fp(name), f"{name}:1", status, 0, OWN)


def model(names=("a/sl-1", "b/sl-1", "c/sl-1"), keep_rounds=50):
    clock = Clock()
    directory = MemberDirectory(OWN, 10.0, ledger_is_revoked=lambda f: False, clock=clock)
    directory.replace([member(n) for n in names])
    book = RoundBook(0.0, clock=clock)
    return ReadModel(directory, book, "a/sn-1", keep_rounds=keep_rounds, clock=clock), \
        directory, book, clock


def test_the_round_in_progress_names_who_it_waits_for_and_since_when():
    view, directory, book, clock = model()
    view.note_config(3, '{"mergeMethod": "mean"}', 0)
    directory.heartbeat(node_key("a/sl-1"))
    book.check_in(1, node_key("a/sl-1"), CheckIn(1, b"x" * 32))
    view.note_check_in(1, node_key("a/sl-1"))
    clock.now += 12.5
    snap = view.snapshot()
    assert snap.session.min_peers == 3 and snap.session.config == {"mergeMethod": "mean"}
    assert snap.current.round == 1
    assert snap.current.checked_in == ["a/sl-1"]
    assert snap.current.missing == ["b/sl-1", "c/sl-1"]
    assert snap.current.short_by == 2 and snap.current.waiting_s == 12.5
    alive = {m.node_id: m.alive for m in snap.members}
    assert alive == {"a/sl-1": False, "b/sl-1": False, "c/sl-1": False}  # 12.5 s > 10 s timeout
    # The typed record survives JSON (what the SN API carries).
    assert Snapshot.from_dict(snap.to_dict()) == snap


def test_rounds_record_timings_reports_and_dropped_nodes():
    view, directory, book, clock = model()
    view.note_config(2, "{}", 0)
    a, b, c = (node_key(n) for n in ("a/sl-1", "b/sl-1", "c/sl-1"))
    view.note_check_in(1, a)
    clock.now += 1.0
    view.note_check_in(1, b)
    clock.now += 0.5
    view.note_sealed(1, (a, b))
    clock.now += 2.0
    view.note_merged(1, b"\x01" * 32)
    view.note_mismatch(1, b, b"\x01" * 32, b"\x02" * 32)
    view.note_outcome("a/sl-1", NodeOutcome("a/sl-1", "merged", "", 2.5, 2.0, 100, 90,
                                            {"c/sl-1": "did not check in"}, True), 1)
    view.note_outcome("b/sl-1", NodeOutcome("b/sl-1", "merged", "", 2.4, 1.9, 80, 70, {}, False), 1)
    # Validation metrics of round 1's merged model, from b's next report: onto round 1.
    view.note_metrics("b/sl-1", 1, {"val_loss": 0.7})
    view.note_metrics("b/sl-1", 9, {"val_loss": 0.1})  # a round not kept: ignored
    view.note_finished(c, 1)
    [r] = view.snapshot().rounds
    assert [o.metrics for o in r.reports] == [{}, {"val_loss": 0.7}]
    assert (r.state, r.participants, r.seal_wait_s, r.merge_s) == ("merged", ["a/sl-1", "b/sl-1"],
                                                                   1.5, 2.0)
    assert r.merged_digest == "01" * 32 and r.disagreed == ["b/sl-1"]
    assert r.dropped == {"c/sl-1": "did not check in"}
    assert (r.bytes_sent, r.bytes_received) == (180, 160)
    assert [o.node_id for o in r.reports] == ["a/sl-1", "b/sl-1"]
    snap = view.snapshot()
    assert snap.finished_nodes == ["c/sl-1"] and snap.session.finished_count == 1
    # The next round is in progress, waiting for everyone again.
    assert (snap.last_sealed_round, snap.latest_merged_round) == (1, 1)
    assert snap.current.round == 2 and snap.current.missing == ["a/sl-1", "b/sl-1", "c/sl-1"]
    # Limited snapshots: only the newest rounds and events.
    view.note_check_in(2, a)
    small = view.snapshot(rounds=1, events=1)
    assert [r.round for r in small.rounds] == [2] and [e.kind for e in small.events] == ["check_in"]


def test_memory_is_bounded_to_the_last_rounds():
    view, *_ = model(keep_rounds=5)
    key = node_key("a/sl-1")
    for r in range(1, 21):
        view.note_check_in(r, key)
        view.note_sealed(r, (key,))
        view.note_merged(r, bytes([r]) * 32)
    assert [r.round for r in view.snapshot().rounds] == [16, 17, 18, 19, 20]
    assert len(view.snapshot().events) <= 200


def test_subscribers_are_told_of_changes_and_can_leave():
    view, *_ = model()
    sub = view.subscribe()
    got = []
    reader = threading.Thread(target=lambda: got.extend(sub))  # iterates until closed
    reader.start()
    before = view.version
    view.note_check_in(1, node_key("a/sl-1"))
    view.note_sealed(1, (node_key("a/sl-1"),))
    assert view.wait_for_change(before, 1.0) >= before + 2
    deadline = time.monotonic() + 5
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    sub.close()
    reader.join(5)
    assert not reader.is_alive()
    assert [(e.kind, e.round, e.node_id) for e in got] == [("check_in", 1, "a/sl-1"),
                                                           ("sealed", 1, "")]
    view.note_merged(1, b"\x03" * 32)  # after unsubscribing: nothing queued, no error
    assert sub.get(0.01) is None
    # A slow subscriber loses the oldest notifications and is told so.
    slow = view.subscribe(max_queued=2)
    for r in range(2, 6):
        view.note_check_in(r, node_key("b/sl-1"))
    assert slow.lagged and [slow.get(0).round, slow.get(0).round] == [4, 5]


def test_the_ledger_thread_feeds_the_model_from_real_ledger_events(tmp_path):
    chain = EmbeddedChain(tmp_path / "chain")
    try:
        sn1 = open_or_deploy(chain.w3, tmp_path / "chain", sentinel_node_id="s/sn-1",
                             fingerprint=fp("s/sn-1"), endpoint="10.0.0.1:30304",
                             funder=chain.dev_accounts[0])
        acc2 = load_or_create_account(tmp_path / "sn2.key")
        fund(chain.w3, sn1.account, acc2.address, 10**19)
        sn1.register_sn("t/sn-1", fp("t/sn-1"), "10.0.0.2:30304", acc2.address)
        from swarm.ledger import LedgerClient
        sn2 = LedgerClient(chain.w3, sn1.address, acc2)
        sn1.configure(2, '{"mergeMethod": "mean"}')
        directory = MemberDirectory(sn1.account.address, 60.0, ledger_is_revoked=sn1.is_revoked)
        book = RoundBook(0.0)
        view = ReadModel(directory, book, "s/sn-1")
        loop = LedgerLoop(sn1, directory, book, fast_poll_s=0.01, idle_poll_s=0.05, view=view)
        loop.load()
        loop.start()
        try:
            # Everything below happens through the *other* SN: the model learns it from events.
            sn2.register_node("t/sl-1", "sl", fp("t/sl-1"), "10.0.0.3:1")
            sn2.register_node("t/sl-2", "sl", fp("t/sl-2"), "10.0.0.4:1")
            d1, d2 = hashlib.sha256(b"1").digest(), hashlib.sha256(b"2").digest()
            sn2.check_in(1, ["t/sl-1"], [1], [d1])
            sn2.check_in_and_seal(1, ["t/sl-2"], [1], [d2], ["t/sl-1", "t/sl-2"])
            # Both votes: a strict majority of the two participants records the digest.
            sn2.commit_merged_batch(1, ["t/sl-1", "t/sl-2"], [hashlib.sha256(b"m").digest()] * 2)
            sn2.mark_finished("t/sl-2")
            with view.subscribe() as sub:
                deadline = time.monotonic() + 30
                while view.snapshot().latest_merged_round < 1 or not view.snapshot().finished_nodes:
                    assert time.monotonic() < deadline, view.snapshot()
                    sub.get(0.5)
            snap = view.snapshot()
            assert {m.node_id for m in snap.members} >= {"t/sl-1", "t/sl-2", "t/sn-1"}
            [r] = [r for r in snap.rounds if r.round == 1]
            assert r.state == "merged" and r.participants == ["t/sl-1", "t/sl-2"]
            assert r.checked_in == ["t/sl-1", "t/sl-2"]
            assert r.merged_digest == hashlib.sha256(b"m").hexdigest()
            assert snap.finished_nodes == ["t/sl-2"] and snap.session.min_peers == 2
            assert snap.current.round == 2 and snap.current.missing == ["t/sl-1", "t/sl-2"]
            assert snap.block_number >= 1
            kinds = [e.kind for e in snap.events]
            for kind in ("member", "check_in", "sealed", "merged", "finished"):
                assert kind in kinds, kinds
        finally:
            loop.stop()
    finally:
        chain.close()
