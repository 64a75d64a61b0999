"""RoundBook's rules with an injected clock: when a round seals, and what it refuses."""

from __future__ import annotations

import pytest

from sn_node.rounds import KEEP_SEALED, CheckIn, RoundBook, RoundError, SealedRound

A, B, C = b"a" * 32, b"b" * 32, b"c" * 32


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def entry(tag: bytes) -> CheckIn:
    return CheckIn(50, tag * 32)


def seal(book: RoundBook, round_number: int, keys=(A, B)) -> SealedRound:
    sealed = SealedRound(round_number, tuple(keys), tuple(50 for _ in keys),
                         tuple(k[:1] * 32 for k in keys))
    book.note_sealed(sealed)
    return sealed


def test_a_round_seals_when_every_active_node_checked_in():
    book = RoundBook(grace_s=5, clock=FakeClock())
    book.check_in(1, A, entry(b"1"))
    assert book.plan(2, {A, B, C}, several_sn=False) == []  # below min_peers
    book.check_in(1, B, entry(b"2"))
    assert book.plan(2, {A, B}, several_sn=False)[0].seal_keys == (A, B)


def test_min_peers_then_the_grace_period_for_the_others():
    clock = FakeClock()
    book = RoundBook(grace_s=5, clock=clock)
    book.check_in(1, A, entry(b"1"))
    book.check_in(1, B, entry(b"2"))
    assert book.plan(2, {A, B, C}, several_sn=False) == []  # C may still come
    assert book.next_wakeup() == 5.0
    clock.now += 4.9
    assert book.plan(2, {A, B, C}, several_sn=False) == []
    clock.now += 0.1
    (plan,) = book.plan(2, {A, B, C}, several_sn=False)
    assert plan.seal_keys == (A, B) and set(plan.check_ins) == {A, B}
    # In flight: not planned twice while the transaction is out.
    assert book.plan(2, {A, B, C}, several_sn=False) == []


def test_a_failed_transaction_puts_the_check_ins_back():
    book = RoundBook(grace_s=0, clock=FakeClock())
    book.check_in(1, A, entry(b"1"))
    (plan,) = book.plan(1, {A}, several_sn=False)
    book.sent(plan, ok=False)
    (again,) = book.plan(1, {A}, several_sn=False)
    assert set(again.check_ins) == {A}


def test_with_several_sn_check_ins_go_out_before_the_round_is_ready():
    book = RoundBook(grace_s=5, clock=FakeClock())
    book.check_in(1, A, entry(b"1"))
    (plan,) = book.plan(3, {A, B, C}, several_sn=True)
    assert plan.seal_keys is None and set(plan.check_ins) == {A}


def test_a_check_in_for_a_past_round_is_refused_with_the_next_round():
    book = RoundBook(grace_s=1, clock=FakeClock())
    seal(book, 1)
    seal(book, 2)
    with pytest.raises(RoundError) as over:
        book.check_in(1, C, entry(b"3"))
    assert (over.value.reason, over.value.next_round) == ("ROUND_OVER", 3)
    # A retried check-in the seal already holds is accepted as it is.
    assert book.check_in(2, A, CheckIn(50, b"a" * 32)) == 2
    with pytest.raises(RoundError) as other:
        book.check_in(2, A, entry(b"9"))
    assert (other.value.reason, other.value.next_round) == ("ROUND_OVER", 3)


def test_a_second_update_for_the_same_round_is_a_duplicate():
    book = RoundBook(grace_s=1, clock=FakeClock())
    assert book.check_in(1, A, entry(b"1")) == 1
    assert book.check_in(1, A, entry(b"1")) == 1  # the same again: idempotent
    with pytest.raises(RoundError) as duplicate:
        book.check_in(1, A, entry(b"2"))
    assert duplicate.value.reason == "DUPLICATE_CHECK_IN"


def test_far_future_rounds_are_refused_at_once():
    book = RoundBook(grace_s=1, clock=FakeClock())
    book.check_in(2, A, entry(b"1"))  # last sealed 0: rounds 1 and 2 are fine
    for call in (lambda: book.check_in(3, A, entry(b"1")),
                 lambda: book.wait_sealed(10**9, timeout_s=60)):
        with pytest.raises(RoundError) as far:
            call()
        assert (far.value.reason, far.value.next_round) == ("TOO_FAR_AHEAD", 1)
    seal(book, 7)
    assert book.check_in(9, A, entry(b"1")) == 1
    with pytest.raises(RoundError, match="too far ahead"):
        book.wait_sealed(10, timeout_s=60)


def test_waiting_for_a_skipped_round_says_which_to_use():
    book = RoundBook(grace_s=1, clock=FakeClock())
    seal(book, 3)
    with pytest.raises(RoundError) as skipped:
        book.wait_sealed(2, timeout_s=60)
    assert (skipped.value.reason, skipped.value.next_round) == ("ROUND_OVER", 4)


def test_a_closed_book_releases_waiters_at_once():
    book = RoundBook(grace_s=1, clock=FakeClock())
    book.close()
    assert book.wait_sealed(1, timeout_s=3600) is None


def test_sealed_rounds_kept_in_memory_are_bounded():
    book = RoundBook(grace_s=1, clock=FakeClock())
    for round_number in range(1, KEEP_SEALED + 50):
        seal(book, round_number)
        book.note_merged(round_number, bytes([round_number % 256]) * 32)
    assert book.sealed(1) is None and book.sealed(KEEP_SEALED + 49) is not None
    assert book.last_sealed == KEEP_SEALED + 49
    assert book.latest_merged[0] == KEEP_SEALED + 49
    old = SealedRound(1, (A,), (50,), (A,))
    book.remember(old)  # read back from the ledger on demand; the newest stays
    assert book.sealed(KEEP_SEALED + 49) is not None
    assert book.last_sealed == KEEP_SEALED + 49
