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
of the next seals (`RoundBook.exclude`). One SN only: with several SN nodes each
would freeze its own part, so they refuse (RECEIPTS_UNAVAILABLE) and the SL nodes
fall back to their vote.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from swarm.receipts import Phase, judge

from sn_node.rounds import RoundBook, RoundError

log = logging.getLogger("swarm.sn.receipts")

GRACE_S = 3.0          # after the latest wait a submitter announced
MAX_REMAINING_S = 30.0  # the most a submitter may ask the set to stay open
MAX_OPEN_S = 60.0      # after the first bitmap, whatever else
EXCLUDE_ROUNDS = 4     # a blamed participant sits out this many seals (doubling on repeat)
KEEP_ROUNDS = 16
MAX_WAITS_PER_CALLER = 4


@dataclass
class _Board:
    keys: tuple[bytes, ...]
    weights: tuple[int, ...]
    bitmaps: dict[int, bytes] = field(default_factory=dict)
    first_at: float | None = None
    open_until: float = 0.0   # max over submitters of arrival + announced remaining wait
    frozen: dict[int, bytes] | None = None


class ReceiptBook:
    def __init__(self, rounds: RoundBook, grace_s: float = GRACE_S,
                 exclude_rounds: int = EXCLUDE_ROUNDS, clock=time.monotonic):
        self._rounds = rounds
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
            board.bitmaps[index] = bytes(bits)
            now = self._clock()
            if board.first_at is None:
                board.first_at = now
            board.open_until = max(board.open_until,
                                   now + min(max(0.0, remaining_s), MAX_REMAINING_S))
            self._maybe_freeze(round_number, phase, board)
            self._cv.notify_all()

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
                while True:
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
