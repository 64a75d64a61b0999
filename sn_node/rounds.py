"""Sync-round bookkeeping inside one SN node: check-ins, seal decisions, waiters."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

# How far past the last sealed round a node may check in or wait: an honest node is at
# most one round ahead of the seal it saw; further is a bug or a peer parking calls.
MAX_AHEAD = 2
# Sealed rounds kept in memory (WaitRound and CommitMerged of recent rounds); older
# ones are read back from the ledger when asked for.
KEEP_SEALED = 64


@dataclass(frozen=True)
class CheckIn:
    weight: int
    digest: bytes


@dataclass(frozen=True)
class SealedRound:
    """A round as the ledger sealed it: participants in ledger order."""

    round: int
    keys: tuple[bytes, ...]
    weights: tuple[int, ...]
    digests: tuple[bytes, ...]
    merged_digest: bytes = b""


@dataclass(frozen=True)
class SealPlan:
    """What the ledger thread should send next for a round.

    `check_ins` are this SN's check-ins not yet on the ledger; `seal_keys` is set when
    the round is ready to seal (then both go in one transaction where possible).
    """

    round: int
    check_ins: dict[bytes, CheckIn]
    seal_keys: tuple[bytes, ...] | None


class RoundError(Exception):
    """A check-in or wait that cannot be served; the message says what to do instead.

    `reason` is the SN API's Reason name for it; `next_round` the round to check in
    for instead, where there is one.
    """

    def __init__(self, message: str, reason: str = "ROUND_OVER", next_round: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.next_round = next_round


@dataclass
class _OpenRound:
    pending: dict[bytes, CheckIn] = field(default_factory=dict)   # ours, not yet on chain
    on_chain: dict[bytes, CheckIn] = field(default_factory=dict)  # anyone's, on chain
    in_flight: dict[bytes, CheckIn] = field(default_factory=dict)  # ours, tx being sent
    ready_since: float | None = None  # when min_peers were first reached

    def all_check_ins(self) -> dict[bytes, CheckIn]:
        return {**self.on_chain, **self.in_flight, **self.pending}


class RoundBook:
    """What one SN knows about sync rounds, and when a round should be sealed.

    SL handlers add check-ins and wait; the SN's ledger thread asks `plan()` what to
    send and reports back what the ledger did. Check-ins wait in memory until the
    round is ready, so with a single SN the whole control plane of a round is one
    transaction; with several SN nodes each flushes its own check-ins at once so the
    others can count them, and whichever sees the round ready seals it (the contract
    takes one seal per round).
    A round is ready when min_peers have checked in and either every active SL node
    has, or `grace_s` has passed since min_peers was reached.
    """

    def __init__(self, grace_s: float, clock=time.monotonic):
        self._grace_s = grace_s
        self._clock = clock
        self._cv = threading.Condition()
        self._open: dict[int, _OpenRound] = {}
        self._sealed: dict[int, SealedRound] = {}
        self.last_sealed: int | None = None
        self.latest_merged: tuple[int, bytes] | None = None
        self._closed = False
        # Participants the receipts found at fault: key -> last round they sit out,
        # and how often each was excluded (each repeat doubles the sentence).
        self._excluded: dict[bytes, int] = {}
        self._offences: dict[bytes, int] = {}

    def close(self) -> None:
        """The SN is stopping: release every waiting WaitRound at once."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # --- SL side -------------------------------------------------------------------

    def _refuse_far_ahead(self, round_number: int) -> None:
        """Refuses a round nobody can reach soon, so no call waits (or state grows) for it."""
        last = self.last_sealed or 0
        if round_number > last + MAX_AHEAD:
            raise RoundError(f"round {round_number} is too far ahead: the last sealed round "
                             f"is {last}; use round {last + 1}", reason="TOO_FAR_AHEAD",
                             next_round=last + 1)

    def check_in(self, round_number: int, key: bytes, entry: CheckIn) -> int:
        """Records an SL node's check-in; returns how many check-ins the round has."""
        with self._cv:
            self._refuse_far_ahead(round_number)
            sealed = self._sealed.get(round_number)
            if sealed is not None:
                if key in sealed.keys:
                    position = sealed.keys.index(key)
                    if (sealed.weights[position], sealed.digests[position]) == (
                            entry.weight, entry.digest):
                        return len(sealed.keys)  # a retried check-in: already in
                    raise RoundError(f"round {round_number} is sealed with another update "
                                     f"from this node; check in for round "
                                     f"{self.last_sealed + 1}", next_round=self.last_sealed + 1)
                raise RoundError(f"round {round_number} was already sealed without this node; "
                                 f"check in for round {self.last_sealed + 1}",
                                 next_round=self.last_sealed + 1)
            if self.last_sealed is not None and round_number <= self.last_sealed:
                raise RoundError(f"round {round_number} is over (round {self.last_sealed} is "
                                 f"sealed); check in for round {self.last_sealed + 1}",
                                 next_round=self.last_sealed + 1)
            state = self._open.setdefault(round_number, _OpenRound())
            known = state.all_check_ins().get(key)
            if known is not None:
                if known != entry:
                    raise RoundError(f"already checked in for round {round_number} with "
                                     f"digest {known.digest.hex()[:16]}… and weight "
                                     f"{known.weight}; a round takes one update per node",
                                     reason="DUPLICATE_CHECK_IN")
                return len(state.all_check_ins())
            state.pending[key] = entry
            self._cv.notify_all()
            return len(state.all_check_ins())

    def wait_sealed(self, round_number: int, timeout_s: float,
                    until_check_in: bool = False) -> SealedRound | None:
        """Blocks until the round is sealed (returns it) or timeout_s passes (None); with
        `until_check_in`, also returns None once the round has any check-in."""
        deadline = self._clock() + timeout_s
        with self._cv:
            self._refuse_far_ahead(round_number)
            while True:
                if round_number in self._sealed:
                    return self._sealed[round_number]
                state = self._open.get(round_number)
                if until_check_in and state is not None and state.all_check_ins():
                    return None
                if self.last_sealed is not None and round_number < self.last_sealed:
                    raise RoundError(f"round {round_number} was skipped: round "
                                     f"{self.last_sealed} was sealed first",
                                     next_round=self.last_sealed + 1)
                left = deadline - self._clock()
                if left <= 0 or self._closed:
                    return None
                self._cv.wait(left)

    def sealed(self, round_number: int) -> SealedRound | None:
        with self._cv:
            return self._sealed.get(round_number)

    def remember(self, sealed: SealedRound) -> None:
        """An older sealed round read back from the ledger (not the newest: see note_sealed)."""
        with self._cv:
            self._sealed.setdefault(sealed.round, sealed)
            self._forget_old()

    def _forget_old(self) -> None:
        if len(self._sealed) > KEEP_SEALED:
            for round_number in sorted(self._sealed)[:-KEEP_SEALED]:
                del self._sealed[round_number]

    def checked_in(self, round_number: int) -> set[bytes]:
        with self._cv:
            state = self._open.get(round_number)
            return set(state.all_check_ins()) if state else set()

    # --- ledger side -----------------------------------------------------------------

    def plan(self, min_peers: int | None, active_sl: set[bytes], several_sn: bool,
             ) -> list[SealPlan]:
        """What to send now: seals of ready rounds, and (with several SN) pending check-ins."""
        now = self._clock()
        plans = []
        with self._cv:
            for round_number in sorted(self._open):
                state = self._open[round_number]
                out = {k for k, last in self._excluded.items() if round_number <= last}
                everyone = {k: v for k, v in state.all_check_ins().items() if k not in out}
                if out and min_peers is not None and len(everyone) < min_peers and (
                        len(state.all_check_ins()) >= min_peers):
                    # Round numbers only advance with seals: an exclusion that leaves
                    # fewer than min_peers would stop the swarm for good. Seal with them.
                    out, everyone = set(), state.all_check_ins()
                ready = False
                if min_peers is not None and len(everyone) >= min_peers:
                    if state.ready_since is None:
                        state.ready_since = now
                    ready = (active_sl - out <= set(everyone)
                             or now - state.ready_since >= self._grace_s)
                if ready and not state.in_flight:
                    plans.append(SealPlan(round_number, dict(state.pending),
                                          tuple(sorted(everyone))))
                elif several_sn and state.pending and not state.in_flight:
                    plans.append(SealPlan(round_number, dict(state.pending), None))
            for p in plans:
                state = self._open[p.round]
                state.in_flight.update(p.check_ins)
                for key in p.check_ins:
                    state.pending.pop(key, None)
        return plans

    def exclude(self, keys, after_round: int, rounds: int) -> dict[bytes, int]:
        """Leaves keys out of the seals of the rounds after `after_round`: `rounds` of
        them, doubled for each earlier exclusion. Returns key -> last round out."""
        with self._cv:
            out = {}
            for key in keys:
                offences = self._offences.get(key, 0)
                self._offences[key] = offences + 1
                last = after_round + rounds * (2 ** min(offences, 6))
                self._excluded[key] = max(self._excluded.get(key, 0), last)
                out[key] = self._excluded[key]
            self._cv.notify_all()
            return out

    def excluded(self, round_number: int) -> set[bytes]:
        """Keys left out of this round's seal."""
        with self._cv:
            return {k for k, last in self._excluded.items() if round_number <= last}

    def has_open(self) -> bool:
        with self._cv:
            return bool(self._open)

    def next_wakeup(self) -> float | None:
        """Seconds until a grace period ends, if a round is waiting on one."""
        with self._cv:
            waits = [s.ready_since + self._grace_s - self._clock()
                     for s in self._open.values() if s.ready_since is not None]
        return max(0.0, min(waits)) if waits else None

    def sent(self, plan: SealPlan, ok: bool) -> None:
        """The ledger thread sent `plan` (ok) or the transaction failed (back to pending)."""
        with self._cv:
            state = self._open.get(plan.round)
            if state is None:
                return
            for key, entry in plan.check_ins.items():
                state.in_flight.pop(key, None)
                if ok:
                    state.on_chain[key] = entry
                else:
                    state.pending.setdefault(key, entry)
            self._cv.notify_all()

    def sealed_as_planned(self, plan: SealPlan) -> SealedRound:
        """The round our own seal transaction fixed, from the check-ins we hold."""
        with self._cv:
            everyone = self._open[plan.round].all_check_ins()
            return SealedRound(plan.round, plan.seal_keys,
                               tuple(everyone[k].weight for k in plan.seal_keys),
                               tuple(everyone[k].digest for k in plan.seal_keys))

    def note_check_in(self, round_number: int, key: bytes, entry: CheckIn) -> None:
        """A check-in seen on the ledger (any SN's)."""
        with self._cv:
            if round_number in self._sealed or (
                    self.last_sealed is not None and round_number <= self.last_sealed):
                return
            state = self._open.setdefault(round_number, _OpenRound())
            state.on_chain[key] = entry
            state.pending.pop(key, None)
            self._cv.notify_all()

    def note_sealed(self, sealed: SealedRound) -> list[bytes]:
        """A seal seen on the ledger; returns this SN's check-ins it left out."""
        with self._cv:
            self._sealed[sealed.round] = sealed
            if self.last_sealed is None or sealed.round > self.last_sealed:
                self.last_sealed = sealed.round
            left_out = []
            for round_number in [r for r in self._open if r <= sealed.round]:
                state = self._open.pop(round_number)
                left_out += [k for k in {**state.pending, **state.in_flight}
                             if k not in sealed.keys]
            self._forget_old()
            self._cv.notify_all()
            return left_out

    def note_merged(self, round_number: int, digest: bytes) -> None:
        with self._cv:
            sealed = self._sealed.get(round_number)
            if sealed is not None and not sealed.merged_digest:
                self._sealed[round_number] = SealedRound(
                    sealed.round, sealed.keys, sealed.weights, sealed.digests, digest)
            if self.latest_merged is None or round_number >= self.latest_merged[0]:
                self.latest_merged = (round_number, digest)
            self._cv.notify_all()
