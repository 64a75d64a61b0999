"""Where peers' pushes for one round land, with one claim per (message, sender).

Typed stores, one per message kind: a push claims its slot before any byte lands,
so a second push of the same thing is refused before it could overwrite bytes
already verified. `Inboxes` decides which rounds may hold buffers at all: the
current round's, and nothing for rounds far ahead or already over (their plans stay,
so late pushes are refused by name; their buffers go).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from sl_node.exchange.plan import RoundPlan

# Pushes may run ahead of this node by one round (a peer that learnt of the seal
# first); anything further cannot be answered soon and is refused at once.
ROUNDS_AHEAD = 1
# Plans of finished rounds kept to refuse late pushes by name (no buffers).
PLANS_KEPT = 8


@dataclass
class _Store:
    """One message kind: claimed senders, accepted values, refusals (sender -> why)."""

    claimed: set = field(default_factory=set)
    accepted: dict = field(default_factory=dict)
    refused: dict = field(default_factory=dict)


class RoundInbox:
    """What peers pushed to this node for one round; the exchange waits on it.

    Pushes may arrive before this node has learnt that the round is sealed, so the
    servicer waits (bounded) for the plan before it can check a push.
    """

    def __init__(self, round_number: int):
        self.round = round_number
        self._cv = threading.Condition()
        self.plan: RoundPlan | None = None
        self.updates = _Store()   # (shard, sender) -> memoryview of its blocks of that shard
        self.merged = _Store()    # (shard, owner) -> (memoryview of its merged range, hashes)
        self.partials = _Store()  # (step, sender) -> np.ndarray of float64
        self.released = False
        self.unreachable: set[int] = set()  # peers our pushes could not reach: no waiting on them
        # Where pushes land, allocated with the plan: row i of update_rows[s] holds
        # sender i's values of my shard s (the merge's input as is), and the merged
        # ranges of the shards' primary owners go straight to their place in the
        # round's result. No copies after the network's. With replicated ownership,
        # the range of a shard's rank-k owner lands in replica buffer k (k >= 1): r − 1
        # more model sizes, until the majority's range is in the result.
        self.update_rows: dict[int, np.ndarray] | None = None
        self.result: np.ndarray | None = None
        self.replica_results: list[np.ndarray] = []

    def set_plan(self, plan: RoundPlan) -> None:
        with self._cv:
            if self.plan is None and not self.released:
                wire = plan.layout.wire
                self.update_rows = {}
                for shard, _ in plan.owned(plan.me):
                    lo, hi = plan.byte_range(shard)
                    self.update_rows[shard] = np.empty(
                        (plan.size, (hi - lo) // wire.itemsize), dtype=wire)
                self.result = np.empty(plan.layout.size, dtype=wire)
                self.replica_results = [np.empty(plan.layout.size, dtype=wire)
                                        for _ in range(plan.r - 1)]
            self.plan = plan
            self._cv.notify_all()

    def wait_plan(self, timeout_s: float) -> RoundPlan | None:
        with self._cv:
            self._cv.wait_for(lambda: self.plan is not None or self.released, timeout_s)
            return self.plan

    # --- claims ---------------------------------------------------------------------

    def claim(self, store: _Store, key) -> bool:
        """True once per key, and only while the round holds its buffers."""
        with self._cv:
            if self.released or key in store.claimed:
                return False
            store.claimed.add(key)
            return True

    def accept(self, store: _Store, key, value) -> None:
        with self._cv:
            if not self.released:
                store.accepted[key] = value
            self._cv.notify_all()

    def refuse(self, store: _Store, key, why: str) -> None:
        with self._cv:
            store.refused.setdefault(key, why)
            self._cv.notify_all()

    def mark_unreachable(self, peer: int) -> None:
        """A push to peer failed to connect: it will not push to us either, so
        nobody waits for it (one timeout for a dead peer, not one per phase)."""
        with self._cv:
            self.unreachable.add(peer)
            self._cv.notify_all()

    def update_buffer(self, sender: int, shard: int | None = None) -> memoryview:
        """Where sender's values of my shard land (my primary shard if not named)."""
        shard = self.plan.me if shard is None else shard
        return memoryview(self.update_rows[shard][sender].view(np.uint8))

    def merged_buffer(self, shard: int, rank: int = 0) -> memoryview:
        """Where the rank-`rank` owner's merged range of shard lands (rank 0: the result)."""
        lo, hi = self.plan.byte_range(shard)
        target = self.result if rank == 0 else self.replica_results[rank - 1]
        return memoryview(target.view(np.uint8))[lo:hi]

    def wait_for(self, ready, deadline: float) -> bool:
        with self._cv:
            return self._cv.wait_for(ready, max(0.0, deadline - time.monotonic()))

    def drop_updates(self) -> None:
        """The merge is done: the update rows are no longer needed (one model size)."""
        with self._cv:
            self.update_rows = None
            self.updates.accepted.clear()

    def drop_replicas(self) -> None:
        """The majority's ranges are in the result: the replica buffers go."""
        with self._cv:
            self.replica_results = []

    def release(self) -> None:
        """The round is over here: its buffers go (the result lives on as the held
        model if the round merged); its plan stays to refuse late pushes."""
        with self._cv:
            self.released = True
            self.update_rows = self.result = None
            self.replica_results = []
            self.updates.accepted.clear()
            self.merged.accepted.clear()
            self.partials.accepted.clear()
            self._cv.notify_all()


class Inboxes:
    """This node's round inboxes: buffers for the current round only.

    `current` is the newest round this node has begun or expects (checked in for);
    pushes for rounds more than ROUNDS_AHEAD beyond it, or for rounds this node
    never held and that are over, get no inbox at all.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._inboxes: dict[int, RoundInbox] = {}
        self.current = 0

    def expect(self, round_number: int) -> None:
        """This node checked in for the round: its peers may push for it soon."""
        with self._lock:
            self.current = max(self.current, round_number)

    def begin(self, round_number: int) -> RoundInbox:
        """This node runs the round now: older rounds give up their buffers."""
        with self._lock:
            self.current = max(self.current, round_number)
            inbox = self._inboxes.setdefault(round_number, RoundInbox(round_number))
            for number, old in list(self._inboxes.items()):
                if number < round_number:
                    old.release()
                if number < round_number - PLANS_KEPT:
                    del self._inboxes[number]
            return inbox

    def for_push(self, round_number: int) -> RoundInbox | str:
        """The inbox a push for this round lands in, or why there is none."""
        with self._lock:
            inbox = self._inboxes.get(round_number)
            if inbox is not None:
                return inbox
            if round_number > self.current + ROUNDS_AHEAD:
                return (f"round {round_number} is too far ahead of this node "
                        f"(it is at round {self.current})")
            if round_number < self.current:
                return f"round {round_number} is over here (this node is at round {self.current})"
            inbox = self._inboxes[round_number] = RoundInbox(round_number)
            return inbox

    def all(self) -> list[RoundInbox]:
        with self._lock:
            return list(self._inboxes.values())

    def get(self, round_number: int) -> RoundInbox | None:
        with self._lock:
            return self._inboxes.get(round_number)

    def __call__(self, round_number: int) -> RoundInbox:  # the old inbox_for(round)
        return self.begin(round_number)
