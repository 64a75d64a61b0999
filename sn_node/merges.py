"""Merged-digest votes of an SN's participants, and the ledger's decisions on them.

The ledger records a round's merged digest only once a strict majority of its sealed
participants committed it (MergeAgreed), or declares that none can (MergeFailed). Each
CommitMerged call is one vote; votes that arrive while a commit transaction is in flight
go out together in the next one (one transaction per batch, not per node). The call then
waits, bounded, for the ledger's decision, which arrives as an event: from this SN's own
transaction or, with several SN nodes, from the ledger loop's poll.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass

from swarm.ledger import MergeStatus

KEEP_ROUNDS = 64


@dataclass(frozen=True)
class MergeDecision:
    status: MergeStatus   # PENDING, AGREED or FAILED
    digest: bytes = b""   # the agreed digest


class MergeBook:
    """Vote batching and decisions, shared by the RPC threads and the ledger thread."""

    def __init__(self, submit: Callable[..., Future]):
        self._submit = submit  # LedgerLoop.submit
        self._cond = threading.Condition()
        self._queued: dict[int, list[tuple[bytes, bytes, Future]]] = {}
        self._decided: dict[int, MergeDecision] = {}
        # (round, key, digest) already sent or queued: a node asking again while the round
        # is pending costs no transaction (the contract would not count it anyway).
        self._sent: dict[tuple[int, bytes, bytes], Future] = {}

    def vote(self, round_number: int, key: bytes, digest: bytes) -> Future:
        """Queues a participant's vote (once per digest); the future completes with the
        TxResult of the transaction that carried it."""
        with self._cond:
            sent = self._sent.get((round_number, key, digest))
            if sent is not None and not (sent.done() and sent.exception() is not None):
                return sent
            future: Future = Future()
            self._sent[(round_number, key, digest)] = future
            for old in [k for k in self._sent if k[0] < round_number - KEEP_ROUNDS]:
                del self._sent[old]
            queue = self._queued.setdefault(round_number, [])
            queue.append((key, digest, future))
            if len(queue) == 1:  # the first of a batch schedules the flush
                self._submit(lambda ledger: self._flush(ledger, round_number))
        return future

    def _flush(self, ledger, round_number: int):
        """On the ledger thread: every vote queued for the round, in one transaction."""
        with self._cond:
            batch = self._queued.pop(round_number, [])
        if not batch:
            return None
        try:
            result = ledger.commit_merged_batch(round_number, [k for k, _, _ in batch],
                                                [d for _, d, _ in batch])
        except Exception as error:  # handed to every waiting RPC
            for _, _, future in batch:
                future.set_exception(error)
            return None
        self.note_events(result.events)
        for _, _, future in batch:
            future.set_result(result)
        return result  # the ledger loop applies its events and counts the transaction

    def note_events(self, events) -> None:
        for event in events:
            if event.name == "MergeAgreed":
                self.note(event.args["round"], MergeDecision(MergeStatus.AGREED,
                                                             bytes(event.args["digest"])))
            elif event.name == "MergeFailed":
                self.note(event.args["round"], MergeDecision(MergeStatus.FAILED))

    def note(self, round_number: int, decision: MergeDecision) -> None:
        with self._cond:
            if round_number in self._decided:
                return  # a decision never changes
            self._decided[round_number] = decision
            for old in [r for r in self._decided if r < round_number - KEEP_ROUNDS]:
                del self._decided[old]
            self._cond.notify_all()

    def decided(self, round_number: int) -> MergeDecision | None:
        with self._cond:
            return self._decided.get(round_number)

    def wait(self, round_number: int, timeout_s: float) -> MergeDecision:
        """The round's decision, or PENDING if none came within timeout_s."""
        with self._cond:
            self._cond.wait_for(lambda: round_number in self._decided, timeout_s)
            return self._decided.get(round_number, MergeDecision(MergeStatus.PENDING))
