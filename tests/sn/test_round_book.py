"""RoundBook.wait_sealed: what WaitRound blocks on."""

from __future__ import annotations

import threading
import time

from sn_node.rounds import CheckIn, RoundBook


def check_in_later(book: RoundBook, delay_s: float) -> None:
    threading.Timer(delay_s, book.check_in, (1, b"k" * 20, CheckIn(1, b"d" * 32))).start()


def test_until_check_in_returns_as_soon_as_someone_checks_in():
    book = RoundBook(grace_s=5)
    check_in_later(book, 0.1)
    started = time.monotonic()
    assert book.wait_sealed(1, timeout_s=10, until_check_in=True) is None
    assert time.monotonic() - started < 2  # not the 10 s timeout


def test_without_it_a_check_in_does_not_end_the_wait():
    book = RoundBook(grace_s=5)
    check_in_later(book, 0.05)
    started = time.monotonic()
    assert book.wait_sealed(1, timeout_s=0.5) is None
    assert time.monotonic() - started >= 0.45
