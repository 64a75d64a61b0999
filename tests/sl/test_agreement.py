"""The receipts rule and the SN's receipt book: who is valid, who is blamed, and one
frozen set for everyone (pure functions and an injected clock, no network)."""

from __future__ import annotations

import threading

import pytest

from swarm.receipts import Phase, judge
from sn_node.receipts import ReceiptBook
from sn_node.rounds import CheckIn, RoundBook, RoundError, SealedRound

ALL4 = (True, True, True, True)


def bits(*ones: int, n: int = 4) -> tuple[bool, ...]:
    return tuple(i in ones for i in range(n))


def test_all_receipts_full_merge_every_contributor():
    verdict = judge(Phase.SCATTER, 4, [0, 1, 2, 3], {i: ALL4 for i in range(4)})
    assert not verdict.failed and verdict.valid == (0, 1, 2, 3)


def test_an_update_every_owner_refused_is_left_out_without_blame():
    everyone_but_3 = bits(0, 1, 2)
    verdict = judge(Phase.SCATTER, 4, [0, 1, 2, 3],
                    {0: everyone_but_3, 1: everyone_but_3, 2: everyone_but_3, 3: ALL4})
    assert not verdict.failed and verdict.valid == (0, 1, 2) and not verdict.blamed


def test_an_owner_vetoing_everyone_is_blamed_alone():
    verdict = judge(Phase.SCATTER, 4, [0, 1, 2, 3],
                    {0: ALL4, 1: ALL4, 2: bits(2), 3: ALL4})
    assert verdict.failed and verdict.blamed == (2,)


def test_a_single_dispute_blames_both_sides():
    # owner 0 says 3's update was bad; owners 1 and 2 took it: one of 0 and 3 lies
    verdict = judge(Phase.SCATTER, 4, [0, 1, 2, 3],
                    {0: bits(0, 1, 2), 1: ALL4, 2: ALL4, 3: ALL4})
    assert verdict.failed and verdict.blamed == (0, 3)


def test_a_missing_bitmap_blames_the_stalled_participant():
    verdict = judge(Phase.SCATTER, 4, [0, 1, 2, 3], {0: ALL4, 1: ALL4, 3: ALL4})
    assert verdict.failed and verdict.blamed == (2,)


def test_two_participants_never_dispute_they_only_drop():
    verdict = judge(Phase.SCATTER, 2, [0, 1], {0: (True, False), 1: (True, True)})
    assert not verdict.failed and verdict.valid == (0,)


def test_gather_an_owner_whose_range_nobody_got_is_blamed():
    lacks_2 = bits(0, 1, 3)
    verdict = judge(Phase.GATHER, 4, [0, 1, 2, 3], {0: lacks_2, 1: lacks_2, 2: ALL4, 3: lacks_2})
    assert verdict.failed and verdict.blamed == (2,)


def test_gather_a_nan_partial_to_everyone_blames_its_sender_not_the_owners_it_stopped():
    # 3 sent NaN partials to all: 0, 1, 2 could not merge and name 3; 3 then lacked
    # their next partials and could not merge either.
    honest = {k: tuple(i != 3 and i != k for i in range(4)) for k in range(3)}
    verdict = judge(Phase.GATHER, 4, [0, 1, 2, 3], {**honest, 3: bits()})
    assert verdict.failed and verdict.blamed == (3,)


def _book(clock):
    rounds = RoundBook(grace_s=0.0, clock=clock)
    keys = tuple(bytes([i]) * 32 for i in range(4))
    rounds.note_sealed(SealedRound(1, keys, (1, 1, 1, 1), tuple(bytes(32) for _ in keys)))
    return rounds, ReceiptBook(rounds, grace_s=3.0, exclude_rounds=2, clock=clock), keys


def test_the_book_freezes_once_all_are_in_and_excludes_the_blamed():
    now = [100.0]
    rounds, book, keys = _book(lambda: now[0])
    for i, key in enumerate(keys):
        book.submit(1, 1, key, bytes(bits(i) if i == 2 else ALL4))
    frozen = book.wait(1, 1, keys[0], 0.0)
    assert frozen == {i: bytes(bits(2) if i == 2 else ALL4) for i in range(4)}
    assert rounds.excluded(2) == rounds.excluded(3) == {keys[2]}
    assert rounds.excluded(4) == set()
    # the second offence doubles the sentence
    rounds.exclude([keys[2]], 4, 2)
    assert keys[2] in rounds.excluded(8) and keys[2] not in rounds.excluded(9)


def test_late_receipts_are_refused_and_everyone_sees_the_same_set():
    now = [100.0]
    rounds, book, keys = _book(lambda: now[0])
    for key in keys[:3]:
        book.submit(1, 1, key, bytes(ALL4))
    assert book.wait(1, 1, keys[0], 0.0) is None  # not all in, grace not over
    now[0] += 3.5
    first = book.wait(1, 1, keys[1], 0.0)
    assert set(first) == {0, 1, 2}
    with pytest.raises(RoundError) as late:
        book.submit(1, 1, keys[3], bytes(ALL4))
    assert late.value.reason == "ROUND_OVER"
    assert book.wait(1, 1, keys[3], 0.0) == first
    assert rounds.excluded(2) == {keys[3]}


def test_a_second_different_bitmap_is_refused_and_the_first_kept():
    now = [100.0]
    _, book, keys = _book(lambda: now[0])
    book.submit(1, 1, keys[0], bytes(bits(0)))
    book.submit(1, 1, keys[0], bytes(bits(0)))  # the same again: fine (a retry)
    with pytest.raises(RoundError) as second:
        book.submit(1, 1, keys[0], bytes(ALL4))
    assert second.value.reason == "RECEIPTS_CONFLICT"


@pytest.mark.parametrize("payload,reason", [(b"\x01\x01", "BAD_REQUEST"),
                                            (b"\x01\x02\x01\x01", "BAD_REQUEST")])
def test_malformed_bitmaps_are_refused(payload, reason):
    _, book, keys = _book(lambda: 0.0)
    with pytest.raises(RoundError) as bad:
        book.submit(1, 1, keys[0], payload)
    assert bad.value.reason == reason


def test_strangers_and_unsealed_rounds_are_refused():
    _, book, keys = _book(lambda: 0.0)
    with pytest.raises(RoundError) as stranger:
        book.submit(1, 1, bytes(32 * [9]), bytes(ALL4))
    assert stranger.value.reason == "NOT_PARTICIPANT"
    with pytest.raises(RoundError) as future:
        book.submit(7, 1, keys[0], bytes(ALL4))
    assert future.value.reason == "NOT_SEALED"


def test_an_excluded_node_is_left_out_of_the_next_seal():
    rounds = RoundBook(grace_s=0.0, clock=lambda: 0.0)
    keys = [bytes([i]) * 32 for i in range(4)]
    rounds.exclude([keys[3]], 1, 2)
    for key in keys:
        rounds.check_in(2, key, CheckIn(1, bytes(32 * [1])))
    (plan,) = rounds.plan(3, set(keys), several_sn=False)
    assert plan.seal_keys == tuple(sorted(keys[:3]))


def test_a_waiter_is_released_when_the_last_bitmap_arrives():
    rounds, book, keys = _book(__import__("time").monotonic)
    got = []
    waiter = threading.Thread(target=lambda: got.append(book.wait(1, 2, keys[0], 10.0)))
    waiter.start()
    for key in keys:
        book.submit(1, 2, key, bytes(ALL4))
    waiter.join(5)
    assert got and len(got[0]) == 4


def test_an_exclusion_that_would_leave_fewer_than_min_peers_is_not_applied():
    rounds = RoundBook(grace_s=0.0, clock=lambda: 0.0)
    keys = [bytes([i]) * 32 for i in range(3)]
    rounds.exclude([keys[2]], 1, 2)
    for key in keys:
        rounds.check_in(2, key, CheckIn(1, bytes(32 * [1])))
    (plan,) = rounds.plan(3, set(keys), several_sn=False)
    assert plan.seal_keys == tuple(sorted(keys))
