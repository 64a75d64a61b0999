"""Receipt bitmaps through the ledger (several SN nodes): the first bitmap per
(round, phase, node) counts, the set freezes once all are in or after the grace,
and nothing is accepted after it froze."""
from __future__ import annotations

import pytest

from swarm.ledger import LedgerError, node_key

from .conftest import SLS1, SLS2, digest


def _sealed_round(swarm):
    sn1, sn2 = swarm.sn1, swarm.sn2
    sn1.configure(2, "{}")
    sn1.check_in(1, SLS1[:2], [1, 1], [digest("a"), digest("b")])
    sn2.check_in_and_seal(1, SLS2, [1], [digest("c")], seal_ids=[*SLS1[:2], *SLS2])
    return sn1, sn2, [*SLS1[:2], *SLS2]


def test_all_bitmaps_in_freeze_the_set_and_the_first_per_node_wins(swarm):
    sn1, sn2, (a, b, c) = _sealed_round(swarm)
    start = sn1.block_number() + 1
    first = sn1.submit_receipts(1, 1, a, b"\x01\x01\x01")
    assert [e.name for e in first.events] == ["ReceiptsSubmitted"]
    # A second, different bitmap from the same node is refused: nobody can equivocate.
    with pytest.raises(LedgerError, match="receipts already submitted"):
        sn1.submit_receipts(1, 1, a, b"\x01\x00\x01")
    with pytest.raises(LedgerError, match="not controller"):
        sn1.submit_receipts(1, 1, c, b"\x01\x01\x01")
    with pytest.raises(LedgerError, match="bitmap length"):
        sn1.submit_receipts(1, 1, b, b"\x01\x01")
    with pytest.raises(LedgerError, match="0 or 1"):
        sn1.submit_receipts(1, 1, b, b"\x01\x02\x01")
    sn1.submit_receipts(1, 1, b, b"\x01\x01\x01")
    last = sn2.submit_receipts(1, 1, c, b"\x01\x01\x00")
    assert [e.name for e in last.events] == ["ReceiptsSubmitted", "ReceiptsFrozen"]
    assert last.named("ReceiptsFrozen")[0].args["count"] == 3
    # The other phase of the same round is a board of its own.
    assert sn1.submit_receipts(1, 2, a, b"\x01\x01\x01").events[0].args["phase"] == 2
    events, _ = sn2.events_since(start)
    submitted = [(e.args["phase"], e.args["id"], e.args["bits"]) for e in events
                 if e.name == "ReceiptsSubmitted"]
    assert submitted == [(1, node_key(a), b"\x01\x01\x01"), (1, node_key(b), b"\x01\x01\x01"),
                         (1, node_key(c), b"\x01\x01\x00"), (2, node_key(a), b"\x01\x01\x01")]


def test_a_majority_freezes_on_request_and_later_bitmaps_are_refused(swarm):
    sn1, sn2, (a, b, c) = _sealed_round(swarm)
    with pytest.raises(LedgerError, match="no receipts yet"):
        sn1.freeze_receipts(1, 1)
    first = sn1.submit_receipts(1, 1, a, b"\x01\x01\x00", remaining_s=99)
    assert first.events[0].args["remainingS"] == 30  # capped as the SNs cap it
    with pytest.raises(LedgerError, match="no majority"):
        sn2.freeze_receipts(1, 1)  # one of three
    sn1.submit_receipts(1, 1, b, b"\x01\x01\x00")
    frozen = sn2.freeze_receipts(1, 1)
    assert frozen.named("ReceiptsFrozen")[0].args["count"] == 2
    with pytest.raises(LedgerError, match="receipts frozen"):
        sn2.submit_receipts(1, 1, c, b"\x01\x01\x01")
    with pytest.raises(LedgerError, match="receipts frozen"):
        sn1.freeze_receipts(1, 1)


def test_receipts_need_a_sealed_round_and_a_participant(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, c = SLS1
    sn1.check_in(1, [a, b, c], [1, 1, 1], [digest(1)] * 3)
    with pytest.raises(LedgerError, match="not a participant"):
        sn1.submit_receipts(1, 1, a, b"\x01\x01")
    sn1.seal(1, [a, b])
    with pytest.raises(LedgerError, match="not a participant"):
        sn1.submit_receipts(1, 1, c, b"\x01\x01")
    with pytest.raises(LedgerError, match="phase must be 1 or 2"):
        sn1.submit_receipts(1, 3, a, b"\x01\x01")
    assert sn1.round_info(1).check_in_count == 3  # the packed participant count stays apart
