"""The one-line progress: what it says in each state, and how often it prints off a terminal."""
from __future__ import annotations

import io
import time

from swarm.progress import ProgressLine, describe
from swarm.swarm_view import RoundView, SessionView, Snapshot, WaitView


def snap(current=None, rounds=(), min_peers=3, finished=0, configured=True) -> Snapshot:
    return Snapshot(version=1, at=0.0, sn_node_id="a/sn-1", sentinel=True,
                    ledger_kind="embedded", contract_address="0x0", chain_id=1, block_number=9,
                    session=SessionView(configured, min_peers, {}, finished,
                                        configured and finished >= min_peers),
                    members=[], current=current, last_sealed_round=0, latest_merged_round=0,
                    rounds=list(rounds), events=[])


def merged_round(number: int, took: float, dropped=None) -> RoundView:
    return RoundView(round=number, state="merged", checked_in=["a", "b"], participants=["a", "b"],
                     opened_at=100.0, sealed_at=100.2, merged_at=100.0 + took, seal_wait_s=0.2,
                     merge_s=took - 0.2, merged_digest="00", disagreed=[],
                     dropped=dropped or {}, bytes_sent=0, bytes_received=0)


def test_the_line_names_who_the_round_waits_for_and_for_how_long():
    line = describe(snap(WaitView(4, ["a/sl-1", "b/sl-2"], ["c/sl-3"], 1, 12.4),
                         [merged_round(3, 0.8, {"c/sl-3": "late"})]))
    assert line == ("round 4: waiting 12 s for c/sl-3 (2 of min 3 checked in) | "
                    "round 3: 0.8 s, without c/sl-3")
    # Nobody known is missing, but min_peers is not reached: nodes have yet to join.
    assert "waiting 3 s for 1 more node(s) to join" in describe(
        snap(WaitView(1, ["a/sl-1", "b/sl-2"], [], 1, 3.0)))
    assert describe(snap(WaitView(2, [], ["a/sl-1"], 3, None))).startswith(
        "round 2: training (no check-in yet)")
    assert describe(snap(configured=False)).startswith("waiting for the first SL node")
    assert describe(snap(None, min_peers=2, finished=2)).startswith("swarm done: 2 node(s)")


def test_off_a_terminal_it_prints_plain_lines_only_when_the_line_changes():
    states = iter([snap(WaitView(1, ["a"], ["b"], 1, 1.0))] * 3
                  + [snap(WaitView(1, ["a", "b"], [], 0, 1.0))] * 100)
    out = io.StringIO()
    line = ProgressLine(lambda: next(states), interval_s=0.01, plain_every_s=0.0,
                        stream=out, tty=False).start()
    time.sleep(0.3)
    line.stop()
    printed = out.getvalue().splitlines()
    assert printed == ["progress: round 1: waiting 1 s for b (1 of min 3 checked in)",
                       "progress: round 1: waiting 1 s for the seal (2 of min 3 checked in)"]


def test_an_unreachable_sn_shows_as_the_line_not_as_an_error():
    def source():
        raise RuntimeError("SN 127.0.0.1:1 GetStatus: UNAVAILABLE")

    assert ProgressLine(source, tty=False).text().startswith("no status from the SN (SN 127")
