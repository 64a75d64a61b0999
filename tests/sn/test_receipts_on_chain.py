"""Receipts with several SN nodes: each SN's ReceiptBook builds the frozen set from the
ledger's ordered ReceiptsSubmitted / ReceiptsFrozen events, so two SNs fed the same
events hand out the same set, whatever their own timing; a node's second bitmap and
anything after the freeze change nothing; a refused retry of the same bitmap is fine."""

from __future__ import annotations

import pytest

from swarm.ledger import LedgerError
from sn_node.receipts import ReceiptBook
from sn_node.rounds import RoundBook, RoundError, SealedRound

KEYS = tuple(bytes([i]) * 32 for i in range(4))
ALL4 = b"\x01\x01\x01\x01"
VETO = b"\x00\x00\x00\x01"  # #3 refuses everyone's update


def _sn(clock=lambda: 0.0, chain=None):
    rounds = RoundBook(grace_s=0.0, clock=clock)
    rounds.note_sealed(SealedRound(1, KEYS, (1, 1, 1, 1), tuple(bytes(32) for _ in KEYS)))
    book = ReceiptBook(rounds, grace_s=3.0, exclude_rounds=2, clock=clock, chain=chain,
                       several_sn=lambda: True)
    return rounds, book


def submitted(key, bits, remaining_s=0):
    return ("ReceiptsSubmitted", {"round": 1, "phase": 1, "id": key, "bits": bits,
                                  "remainingS": remaining_s})


FROZEN = ("ReceiptsFrozen", {"round": 1, "phase": 1, "count": 3})


def test_two_sns_fed_the_same_ordered_events_freeze_the_same_set_and_blame_alike():
    events = [submitted(KEYS[3], VETO), submitted(KEYS[0], ALL4),
              submitted(KEYS[3], ALL4),          # a second bitmap: the first counts
              submitted(KEYS[1], ALL4), FROZEN,
              submitted(KEYS[2], ALL4)]          # after the freeze: not in the set
    results = []
    for clock in (lambda: 0.0, lambda: 1000.0):   # their own clocks play no part
        rounds, book = _sn(clock)
        for name, args in events:
            book.note_chain_event(name, args)
        book.note_chain_event(*FROZEN)            # the loop replays events: harmless
        results.append((book.wait(1, 1, KEYS[0], 0.0), rounds.excluded(2)))
    assert results[0] == results[1]
    frozen, excluded = results[0]
    assert frozen == {0: ALL4, 1: ALL4, 3: VETO}
    # #2's bitmap missed the freeze: it counts as stalled, as on every SN.
    assert KEYS[2] in excluded


def test_nothing_freezes_without_the_ledgers_event():
    _, book = _sn()
    for key in KEYS[:3]:
        book.note_chain_event(*submitted(key, ALL4))
    assert book.wait(1, 1, KEYS[0], 0.0) is None  # a majority, but no ReceiptsFrozen yet


class FakeLedger:
    """The contract's receipt rules, delivering events to the SN's book as the loop does."""

    def __init__(self):
        self.book = None
        self.first: dict[bytes, bytes] = {}
        self.freezes = 0

    def submit(self, round_number, phase, key, bits, remaining_s):
        if key in self.first:
            raise LedgerError("submitReceipts", "receipts already submitted")
        self.first[key] = bits
        self.book.note_chain_event(*submitted(key, bits, int(remaining_s)))

    def freeze(self, round_number, phase):
        self.freezes += 1
        self.book.note_chain_event("ReceiptsFrozen", {"round": 1, "phase": 1,
                                                      "count": len(self.first)})


def test_submit_goes_through_the_ledger_and_the_waiter_asks_for_the_freeze_after_the_grace():
    now = [0.0]
    ledger = FakeLedger()
    _, book = _sn(lambda: now[0], ledger)
    ledger.book = book
    for key in KEYS[:3]:
        book.submit(1, 1, key, ALL4, remaining_s=2.0)
    book.submit(1, 1, KEYS[0], ALL4)                  # a retry of the same bitmap
    with pytest.raises(RoundError) as conflict:
        book.submit(1, 1, KEYS[0], VETO)
    assert conflict.value.reason == "RECEIPTS_CONFLICT"
    assert book.wait(1, 1, KEYS[0], 0.0) is None and ledger.freezes == 0
    now[0] = 4.9
    assert book.wait(1, 1, KEYS[0], 0.0) is None and ledger.freezes == 0
    now[0] = 5.0                                      # 2 s announced + 3 s grace
    assert book.wait(1, 1, KEYS[0], 0.0) == {0: ALL4, 1: ALL4, 2: ALL4}
    assert ledger.freezes == 1
    with pytest.raises(RoundError) as late:
        book.submit(1, 1, KEYS[3], ALL4)
    assert late.value.reason == "ROUND_OVER"


def test_a_freeze_seen_before_some_of_its_bitmaps_waits_for_them():
    # The loop applies a transaction's own events at once, possibly before earlier
    # blocks' events: the set is final once the frozen count of bitmaps is here.
    _, book = _sn()
    book.note_chain_event(*submitted(KEYS[1], ALL4))
    book.note_chain_event(*submitted(KEYS[3], VETO))
    book.note_chain_event(*FROZEN)
    assert book.wait(1, 1, KEYS[1], 0.0) is None
    book.note_chain_event(*submitted(KEYS[0], ALL4))
    assert book.wait(1, 1, KEYS[1], 0.0) == {0: ALL4, 1: ALL4, 3: VETO}
