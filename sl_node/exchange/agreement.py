"""Who decides which updates are valid, and whether the all-gather completed.

Two implementations behind one interface:

- `ReceiptAgreement` (the default with one SN): every participant submits its
  receipt bitmap to the SN, which freezes one set per round and phase and hands
  the identical set to everyone (the SN is the totally ordered broadcast, so nobody
  can tell different peers different things). Every node then applies the same
  pure rule (`swarm.receipts.judge`): the same valid set, or the same failure naming
  the same participants, whom the SN leaves out of the next seals.
- `VoteAgreement`: the all-reduce of 0/1 votes between the owners, valid iff every
  owner voted for it. Needs no SN, but one owner can veto every update, and a
  dishonest one can vote differently towards different peers (used in unit tests
  and as the fallback where the SN cannot freeze receipts: several SN nodes).
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

import numpy as np

from swarm.network.sn_client import Reason, SwarmNetworkError
from swarm.receipts import Phase, judge

from sl_node.exchange.faults import Kind, Outgoing
from sl_node.exchange.plan import FailReason, RoundFailed, RoundPlan

log = logging.getLogger("swarm.sl.exchange")


class RoundContext(Protocol):
    plan: RoundPlan
    hook: Callable
    deadline: float  # time.monotonic() until which this node waited for the phase

    def allreduce(self, values: np.ndarray, vote: bool = False) -> np.ndarray: ...


class Agreement(Protocol):
    def decide(self, ctx: RoundContext, received: tuple[bool, ...]) -> list[int]:
        """The contributors to merge, identical on every honest node (RoundFailed)."""

    def confirm(self, ctx: RoundContext, gathered: tuple[bool, ...]) -> None:
        """Raises RoundFailed unless the all-gather completed everywhere."""


class VoteAgreement:
    """Unanimous 0/1 votes through one all-reduce step (no SN needed)."""

    def decide(self, ctx: RoundContext, received: tuple[bool, ...]) -> list[int]:
        plan = ctx.plan
        votes = np.array([1.0 if received[i] else 0.0 for i in range(plan.size)])
        counted = ctx.allreduce(votes, vote=True)
        valid = [i for i in plan.contributors if counted[i] == plan.size]
        if not valid:
            raise RoundFailed(f"round {plan.round}: no valid update to merge",
                              FailReason.NO_VALID_UPDATE)
        return valid

    def confirm(self, ctx: RoundContext, gathered: tuple[bool, ...]) -> None:
        plan = ctx.plan
        missing = [j for j in plan.others if not gathered[j]]
        if missing:
            raise RoundFailed(f"round {plan.round}: no merged range from {plan.names(missing)}",
                              FailReason.INCOMPLETE)


class ReceiptBoard(Protocol):
    """The SN's receipts API as the agreement needs it (SNClient has these)."""

    def submit_receipts(self, round_number: int, phase: int, bits: bytes,
                        remaining_s: float = 0.0) -> None: ...

    def wait_receipts(self, round_number: int, phase: int, timeout_s: float
                      ) -> tuple[bool, dict[int, bytes]]: ...


class ReceiptAgreement:
    """Receipt bitmaps through the SN, frozen once, judged alike everywhere."""

    def __init__(self, board: ReceiptBoard, wait_s: float = 30.0,
                 fallback: Agreement | None = None):
        self._board = board
        self._wait_s = wait_s
        self._fallback = fallback or VoteAgreement()
        self._fallback_rounds: set[int] = set()

    def decide(self, ctx: RoundContext, received: tuple[bool, ...]) -> list[int]:
        verdict = self._judge(ctx, Phase.SCATTER, received)
        if verdict is None:
            return self._fallback.decide(ctx, received)
        return list(verdict.valid)

    def confirm(self, ctx: RoundContext, gathered: tuple[bool, ...]) -> None:
        if ctx.plan.round in self._fallback_rounds:
            return self._fallback.confirm(ctx, gathered)
        self._judge(ctx, Phase.GATHER, gathered)

    def _judge(self, ctx: RoundContext, phase: Phase, bits: tuple[bool, ...]):
        plan = ctx.plan
        mine = np.array([1.0 if b else 0.0 for b in bits])
        try:
            for out in ctx.hook(Outgoing(Kind.RECEIPTS, plan, None, values=mine, vote=True)):
                try:
                    self._board.submit_receipts(
                        plan.round, int(phase), bytes(int(v == 1) for v in out.values),
                        max(0.0, ctx.deadline - time.monotonic()))
                except SwarmNetworkError as error:
                    if error.reason == Reason.RECEIPTS_UNAVAILABLE:
                        raise
                    log.warning("round %d: receipts refused: %s", plan.round, error)
            deadline = time.monotonic() + self._wait_s
            while True:
                frozen, bitmaps = self._board.wait_receipts(
                    plan.round, int(phase), max(0.1, deadline - time.monotonic()))
                if frozen or time.monotonic() >= deadline:
                    break
        except SwarmNetworkError as error:
            if error.reason == Reason.RECEIPTS_UNAVAILABLE and phase is Phase.SCATTER:
                log.info("round %d: the SN keeps no receipts (%s); deciding by vote",
                         plan.round, error)
                self._fallback_rounds = {r for r in self._fallback_rounds
                                         if r > plan.round - 8} | {plan.round}
                return None
            raise RoundFailed(f"round {plan.round}: receipts ({phase.name.lower()}) failed: "
                              f"{error}", FailReason.AGREEMENT_UNAVAILABLE) from None
        if not frozen:
            raise RoundFailed(f"round {plan.round}: the SN froze no receipts "
                              f"({phase.name.lower()}) within {self._wait_s:.0f} s",
                              FailReason.AGREEMENT_UNAVAILABLE)
        parsed = {i: tuple(bool(b) for b in bits) for i, bits in bitmaps.items()
                  if 0 <= i < plan.size and len(bits) == plan.size}
        verdict = judge(phase, plan.size, plan.contributors, parsed)
        if verdict.failed:
            blamed = tuple(plan.peers[i].node_id for i in verdict.blamed)
            reason = (FailReason.STALLED if set(verdict.blamed) - set(parsed)
                      else FailReason.DISPUTE if blamed else FailReason.NO_VALID_UPDATE)
            text = verdict.reason
            for i in verdict.blamed:
                text = text.replace(f"#{i}", plan.peers[i].node_id)
            raise RoundFailed(f"round {plan.round} ({phase.name.lower()}): {text}", reason,
                              blamed)
        return verdict
