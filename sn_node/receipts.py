"""Receipt bitmaps of sealed rounds: collected from the participants, frozen once,
handed identically to everyone.

After the scatter (and again after the all-gather) each participant submits which
of the others' messages reached it intact. The set freezes once every participant's
bitmap is in; or once a strict majority is in and `grace_s` has passed since the
latest moment any submitter said it would still have waited for others' messages
(so a peer that withholds a message from some nodes, and reports early itself,
cannot get them frozen out while they still wait for it); or, at the latest,
`MAX_OPEN_S` after the first bitmap. Whatever comes later is refused. Every caller of `wait` gets the same frozen set, so every SL node applies
the same rule (`swarm.receipts.judge`) to the same input, and nobody can tell
different peers different things. The SN applies it too and leaves the blamed out
of the next seals (`RoundBook.exclude`).

With several SN nodes the bitmaps go through the ledger instead (`ChainReceipts`):
each SN sends its own nodes' bitmaps (`submitReceipts`), the contract keeps the first
per (round, phase, node) and refuses any later one and any after the freeze, and it
freezes the set once all are in, or on `freezeReceipts` once a strict majority is
(sent by a waiting SN after the grace, on its own clock). Every SN builds the set from the chain's ordered
ReceiptsSubmitted events up to ReceiptsFrozen (`note_chain_event`), so every SL node
on every SN gets the identical set.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Protocol

from swarm.receipts import Phase, judge

from sn_node.rounds import RoundBook, RoundError

log = logging.getLogger("swarm.sn.receipts")

GRACE_S = 3.0          # after the latest wait a submitter announced
MAX_REMAINING_S = 30.0  # the most a submitter may ask the set to stay open
MAX_OPEN_S = 60.0      # after the first bitmap, whatever else
EXCLUDE_ROUNDS = 4     # a blamed participant sits out this many seals (doubling on repeat)
KEEP_ROUNDS = 16
MAX_WAITS_PER_CALLER = 4


FREEZE_RETRY_S = 1.0   # between one SN's freezeReceipts attempts on a board


class ChainReceipts(Protocol):
    """The ledger's receipts functions as the book needs them (several SN nodes)."""

    def submit(self, round_number: int, phase: int, key: bytes, bits: bytes,
               remaining_s: float) -> None:
        """Sends the bitmap and returns once mined (its events applied); raises
        swarm.ledger.LedgerError when the contract refuses it."""

    def freeze(self, round_number: int, phase: int) -> None:
        """Asks the ledger to freeze the set, without waiting (a refusal is harmless)."""


@dataclass
class _Board:
    keys: tuple[bytes, ...]
    weights: tuple[int, ...]
    bitmaps: dict[int, bytes] = field(default_factory=dict)
    first_at: float | None = None
    open_until: float = 0.0   # max over submitters of arrival + announced remaining wait
    frozen: dict[int, bytes] | None = None
    # On the ledger: this SN's last freeze attempt, and the count ReceiptsFrozen named.
    freeze_tried: float | None = None
    frozen_count: int | None = None


class ReceiptBook:
    def __init__(self, rounds: RoundBook, grace_s: float = GRACE_S,
                 exclude_rounds: int = EXCLUDE_ROUNDS, clock=time.monotonic,
                 chain: ChainReceipts | None = None, several_sn=lambda: False):
        self._rounds = rounds
        self._chain = chain
        self._several_sn = several_sn  # true: the bitmaps go through the ledger
        self._grace_s = grace_s
        self._exclude_rounds = exclude_rounds
        self._clock = clock
        self._cv = threading.Condition()
        self._boards: dict[tuple[int, int], _Board] = {}
        self._waiting: Counter = Counter()

    def _board(self, round_number: int, phase: int) -> _Board:
        try:
            Phase(phase)
        except ValueError:
            raise RoundError(f"phase {phase} is not one of "
                             f"{', '.join(f'{p.value} ({p.name})' for p in Phase)}",
                             reason="BAD_REQUEST") from None
        board = self._boards.get((round_number, phase))
        if board is None:
            sealed = self._rounds.sealed(round_number)
            if sealed is None:
                raise RoundError(f"round {round_number} is not sealed (or no longer cached "
                                 f"here)", reason="NOT_SEALED")
            board = self._boards[(round_number, phase)] = _Board(sealed.keys, sealed.weights)
            for old in [k for k in self._boards if k[0] < round_number - KEEP_ROUNDS]:
                del self._boards[old]
        return board

    def submit(self, round_number: int, phase: int, key: bytes, bits: bytes,
               remaining_s: float = 0.0) -> None:
        """Records key's bitmap (RoundError: not a participant, malformed, too late,
        or a second one that differs)."""
        on_chain = self._chain is not None and self._several_sn()
        with self._cv:
            board = self._board(round_number, phase)
            if key not in board.keys:
                raise RoundError(f"not a participant of round {round_number}",
                                 reason="NOT_PARTICIPANT")
            if len(bits) != len(board.keys) or any(b not in (0, 1) for b in bits):
                raise RoundError(f"a bitmap for round {round_number} is {len(board.keys)} "
                                 f"bytes of 0 or 1, got {len(bits)} bytes",
                                 reason="BAD_REQUEST")
            index = board.keys.index(key)
            if not on_chain:
                self._maybe_freeze(round_number, phase, board)
            known = board.bitmaps.get(index)
            if known is not None:
                if known != bits:
                    raise RoundError(f"already submitted other receipts for round "
                                     f"{round_number} phase {phase}: one bitmap per "
                                     f"participant", reason="RECEIPTS_CONFLICT")
                return
            if board.frozen is not None:
                raise RoundError(f"the receipts of round {round_number} phase {phase} are "
                                 f"frozen without this node's", reason="ROUND_OVER")
            if not on_chain:
                board.bitmaps[index] = bytes(bits)
                now = self._clock()
                if board.first_at is None:
                    board.first_at = now
                board.open_until = max(board.open_until,
                                       now + min(max(0.0, remaining_s), MAX_REMAINING_S))
                self._maybe_freeze(round_number, phase, board)
                self._cv.notify_all()
                return
        # Outside the lock: the ledger thread applies the events under it.
        self._submit_on_chain(round_number, phase, key, index, bytes(bits), remaining_s)

    def _submit_on_chain(self, round_number: int, phase: int, key: bytes, index: int,
                         bits: bytes, remaining_s: float) -> None:
        from swarm.ledger import LedgerError  # the ledger client is the SN's anyway
        try:
            self._chain.submit(round_number, phase, key, bits, remaining_s)
            return
        except LedgerError as error:
            refused = error
        with self._cv:  # the events tell whether it was a retry or a conflict
            board = self._board(round_number, phase)
            known = board.bitmaps.get(index)
            if known == bits:
                return
            if known is not None:
                raise RoundError(f"already submitted other receipts for round {round_number} "
                                 f"phase {phase}: one bitmap per participant",
                                 reason="RECEIPTS_CONFLICT")
            if board.frozen is not None:
                raise RoundError(f"the receipts of round {round_number} phase {phase} are "
                                 f"frozen without this node's", reason="ROUND_OVER")
        raise RoundError(f"ledger refused the receipts: {refused}", reason="LEDGER_REFUSED")

    def note_chain_event(self, name: str, args) -> None:
        """Applies a ReceiptsSubmitted or ReceiptsFrozen event, in the chain's order (the
        ledger loop replays events: a repeat is a no-op)."""
        with self._cv:
            try:
                board = self._board(args["round"], args["phase"])
            except RoundError:
                return  # a round not sealed here (or long gone): nobody waits on it
            if board.frozen is not None:
                return
            if name == "ReceiptsSubmitted":
                if args["id"] not in board.keys:
                    return
                index = board.keys.index(args["id"])
                if index in board.bitmaps:
                    return
                board.bitmaps[index] = bytes(args["bits"])
                # The grace runs on this SN's clock from when it saw the bitmap: only the
                # set, fixed by ReceiptsFrozen, must be the same everywhere.
                now = self._clock()
                if board.first_at is None:
                    board.first_at = now
                board.open_until = max(board.open_until,
                                       now + min(float(args["remainingS"]), MAX_REMAINING_S))
            elif name == "ReceiptsFrozen":
                board.frozen_count = int(args["count"])
            # A transaction's own events can arrive before earlier blocks' (the loop
            # applies a result at once): the set is final once all `count` are here.
            if board.frozen_count is not None and len(board.bitmaps) >= board.frozen_count:
                if len(board.bitmaps) > board.frozen_count:
                    log.warning("round %d phase %d: the ledger froze %d receipts, %d seen here",
                                args["round"], args["phase"], board.frozen_count,
                                len(board.bitmaps))
                self._freeze(args["round"], args["phase"], board)

    def _try_chain_freeze(self, round_number: int, phase: int, board: _Board) -> None:
        """Asks the ledger to freeze once a majority is in and the grace has passed
        (the ledger checks the majority; all in froze by itself)."""
        if board.first_at is None or board.frozen is not None:
            return
        now = self._clock()
        majority = 2 * len(board.bitmaps) > len(board.keys)
        if majority and now >= board.open_until + self._grace_s and (board.freeze_tried is None or now >= board.freeze_tried + FREEZE_RETRY_S):
            board.freeze_tried = now
            self._chain.freeze(round_number, phase)

    def wait(self, round_number: int, phase: int, key: bytes, timeout_s: float
             ) -> dict[int, bytes] | None:
        """The frozen set (index -> bitmap), or None if it did not freeze within timeout_s."""
        deadline = self._clock() + timeout_s
        with self._cv:
            board = self._board(round_number, phase)
            if self._waiting[key] >= MAX_WAITS_PER_CALLER:
                raise RoundError(f"already {MAX_WAITS_PER_CALLER} receipt waits from this "
                                 f"node", reason="BUSY")
            self._waiting[key] += 1
            try:
                on_chain = self._chain is not None and self._several_sn()
                while True:
                    if on_chain:
                        self._try_chain_freeze(round_number, phase, board)
                    else:
                        self._maybe_freeze(round_number, phase, board)
                    if board.frozen is not None:
                        return dict(board.frozen)
                    now = self._clock()
                    if now >= deadline:
                        return None
                    self._cv.wait(max(0.01, min(deadline - now, 0.25)))
            finally:
                self._waiting[key] -= 1
                if not self._waiting[key]:
                    del self._waiting[key]

    def _maybe_freeze(self, round_number: int, phase: int, board: _Board) -> None:
        if board.frozen is not None or board.first_at is None:
            return
        now = self._clock()
        everyone = len(board.bitmaps) == len(board.keys)
        majority = 2 * len(board.bitmaps) > len(board.keys)
        if not (everyone or (majority and now >= board.open_until + self._grace_s)
                or now >= board.first_at + MAX_OPEN_S):
            return
        self._freeze(round_number, phase, board)

    def _freeze(self, round_number: int, phase: int, board: _Board) -> None:
        board.frozen = dict(board.bitmaps)
        self._cv.notify_all()
        contributors = [i for i, w in enumerate(board.weights) if w > 0]
        bitmaps = {i: tuple(bool(b) for b in bits) for i, bits in board.frozen.items()}
        verdict = judge(Phase(phase), len(board.keys), contributors, bitmaps)
        if verdict.blamed:
            until = self._rounds.exclude([board.keys[i] for i in verdict.blamed], round_number,
                                         self._exclude_rounds)
            log.warning("round %d (%s): %s; left out of the next seals: %s", round_number,
                        Phase(phase).name.lower(), verdict.reason,
                        ", ".join(f"#{i} until round {until[board.keys[i]]}"
                                  for i in verdict.blamed))
