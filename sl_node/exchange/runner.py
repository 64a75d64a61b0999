"""One sync round's sharded exchange: reduce-scatter, agree, merge, all-gather, confirm."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from swarm.merging import MergeMethod
from swarm.tensors import block_hashes, digest_from_hashes

from sl_node.exchange import merged as merged_msg
from sl_node.exchange import partial as partial_msg
from sl_node.exchange import update as update_msg
from sl_node.exchange.agreement import Agreement, VoteAgreement
from sl_node.exchange.codec import IDENTITY
from sl_node.exchange.faults import send_as_is
from sl_node.exchange.inbox import Inboxes, RoundInbox
from sl_node.exchange.plan import FailReason, RoundFailed, RoundPlan
from sl_node.exchange.transport import ByteCounter, Link, PushFailed, Transport, trim_heap

log = logging.getLogger("swarm.sl.exchange")


@dataclass
class ExchangeResult:
    """What a round's exchange gives the driver; unpacks as (merged, digest, hashes)."""

    merged: np.ndarray
    digest: bytes
    hashes: list[bytes]
    dropped: dict[str, str] = field(default_factory=dict)  # node id -> why its update is out
    phases: dict[str, float] = field(default_factory=dict)  # seconds per phase

    def __iter__(self):
        return iter((self.merged, self.digest, self.hashes))

    def __getitem__(self, index):
        return (self.merged, self.digest, self.hashes)[index]


@dataclass
class _Round:
    """One run's context, handed to the agreement."""

    plan: RoundPlan
    inbox: RoundInbox
    link: Link
    step: int = 0
    deadline: float = 0.0  # the current phase's: how long we would have waited

    @property
    def hook(self):
        return self.link.hook

    def allreduce(self, values: np.ndarray, vote: bool = False) -> np.ndarray:
        self.step += 1
        return partial_msg.allreduce(self.link, self.plan, self.inbox, self.step,
                                     np.asarray(values, dtype=np.float64), vote)


class Exchange:
    """Runs this node's part of a sealed round with its peers.

    Every node sends and receives about 2·(N−1)/N model sizes: it pushes each owner
    that owner's range of its update (reduce-scatter), then the merged range it
    owns to every other participant (all-gather). Between the two, the agreement
    fixes one valid set for every owner; after the all-gather it confirms that
    every node got every range, or fails the round alike for all.
    """

    def __init__(self, channel_for, inboxes: Inboxes, counter: ByteCounter,
                 peer_timeout_s: float, agreement: Agreement | None = None,
                 hook=send_as_is, codec=IDENTITY):
        self.inboxes = inboxes
        self._transport = Transport(channel_for, counter, peer_timeout_s)
        self._link = Link(self._transport, hook, codec)
        self.agreement = agreement or VoteAgreement()

    def close(self) -> None:
        self._transport.close()

    def run(self, plan: RoundPlan, flat: np.ndarray | None, hashes: list[bytes],
            merge: MergeMethod) -> ExchangeResult:
        inbox = self.inboxes.begin(plan.round)
        inbox.set_plan(plan)
        try:
            return self._run(plan, inbox, flat, hashes, merge)
        finally:
            inbox.release()  # the result lives on only as the held model
            trim_heap()

    def _run(self, plan, inbox, flat, hashes, merge) -> ExchangeResult:
        link, transport = self._link, self._transport
        others = plan.others
        mine = plan.shards[plan.me]
        lo, hi = plan.byte_range(plan.me)
        data = memoryview(flat.view(np.uint8)) if flat is not None else None
        ctx = _Round(plan, inbox, link)
        started = time.monotonic()

        # Reduce-scatter: push every owner its range of our update.
        sends = []
        if data is not None:
            sends = [self._submit(inbox, j, update_msg.push_update, link, plan, j, data, hashes)
                     for j in others]
        store = inbox.updates
        expected = [i for i in plan.contributors if i != plan.me]
        deadline = started + transport.deadline_s(len(expected) * (hi - lo))
        inbox.wait_for(lambda: all(i in store.accepted or i in store.refused
                                   or i in inbox.unreachable for i in expected), deadline)
        self._settle(sends, plan)
        trim_heap()  # the scatter's buffers, before the merge and the all-gather add theirs
        phases = {"scatter": time.monotonic() - started}
        received = tuple((i == plan.me and data is not None) or i in store.accepted
                         for i in range(plan.size))
        dropped = {}
        for i in expected:
            if i not in store.accepted:
                dropped[plan.peers[i].node_id] = store.refused.get(
                    i, f"nothing arrived within {deadline - started:.1f} s")

        # Agreement: one valid set on every owner.
        ctx.deadline = deadline
        mark = time.monotonic()
        valid = self.agreement.decide(ctx, received)
        phases["agree"] = time.monotonic() - mark
        for i in plan.contributors:
            if i not in valid:
                dropped.setdefault(plan.peers[i].node_id, "not received intact by every owner")
        for node_id, why in dropped.items():
            log.warning("round %d: update from %s not taken: %s", plan.round, node_id, why)

        # Merge our range over the valid updates, in participant order.
        mark = time.monotonic()
        wire = plan.layout.wire
        if plan.me in valid:
            inbox.update_buffer(plan.me)[:] = data[lo:hi]
        rows = inbox.update_rows
        # The valid rows moved down in place (ascending, so no row is overwritten before
        # it moved): the merge's input without a copy of N shards.
        for k, i in enumerate(valid):
            if k != i:
                rows[k] = rows[i]
        updates = rows[:len(valid)]
        weights = np.array([plan.peers[i].weight for i in valid], dtype=np.float64)
        merged_bytes = inbox.merged_buffer(plan.me)
        merged_ok = True
        try:
            # Straight into our range of the round's result, block by block.
            merge(updates, weights, ctx.allreduce, out=np.frombuffer(merged_bytes, dtype=wire))
        except RoundFailed as error:
            # A partial missing or refused: the others must learn it from our receipts,
            # so go on to the all-gather without our range.
            log.warning("%s", error)
            merged_ok = False
        del updates, rows
        inbox.drop_updates()
        my_hashes = block_hashes(merged_bytes, mine.start) if merged_ok else []
        phases["merge"] = time.monotonic() - mark

        # All-gather: our merged range to everyone, theirs to us.
        mark = time.monotonic()
        sends = ([self._submit(inbox, j, merged_msg.push_merged, link, plan, j, merged_bytes,
                               my_hashes) for j in others] if merged_ok else [])
        store = inbox.merged
        deadline = time.monotonic() + transport.deadline_s(plan.layout.nbytes - (hi - lo))
        inbox.wait_for(lambda: all(j in store.accepted or j in store.refused
                                   or j in inbox.unreachable for j in others), deadline)
        self._settle(sends, plan)
        # Receipts of the all-gather: j's partials (up to the step we reached) and,
        # if we merged at all, j's merged range. A node that could not merge names
        # only whose partials failed it, not the ranges that then failed everyone.
        partials_ok = self._partials_ok(plan, inbox, ctx.step)
        gathered = tuple(merged_ok if j == plan.me else
                         partials_ok[j] and (j in store.accepted or not merged_ok)
                         for j in range(plan.size))
        phases["gather"] = time.monotonic() - mark
        mark = time.monotonic()
        ctx.deadline = deadline
        self.agreement.confirm(ctx, gathered)
        if not merged_ok or any(j not in store.accepted for j in others):  # the agreement let it pass: cannot be, but never assemble holes
            raise RoundFailed(f"round {plan.round}: merged ranges missing here",
                              FailReason.INCOMPLETE)
        phases["confirm"] = time.monotonic() - mark

        # Every merged range already sits in its place in inbox.result.
        all_hashes: list[bytes] = []
        for j in range(plan.size):
            all_hashes += my_hashes if j == plan.me else store.accepted[j][1]
        digest = digest_from_hashes(plan.layout.fingerprint, all_hashes)
        log.debug("round %d exchange phases: %s", plan.round,
                  ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in phases.items()))
        if dropped:
            log.warning("round %d merged without %s", plan.round, ", ".join(dropped))
        return ExchangeResult(inbox.result, digest, all_hashes, dropped, phases)

    @staticmethod
    def _partials_ok(plan: RoundPlan, inbox: RoundInbox, steps: int) -> list[bool]:
        """Per participant: every all-reduce partial it sent us was taken."""
        return [all((s, j) in inbox.partials.accepted for s in range(1, steps + 1))
                for j in range(plan.size)]

    def _submit(self, inbox: RoundInbox, peer: int, fn, *args):
        future = self._transport.pool.submit(fn, *args)

        def done(f):
            error = f.exception() if not f.cancelled() else None
            if isinstance(error, PushFailed) and error.unreachable:
                inbox.mark_unreachable(peer)

        future.add_done_callback(done)
        return future

    def _settle(self, futures, plan: RoundPlan) -> None:
        for future in futures:
            try:
                future.result(timeout=self._transport.deadline_s(plan.layout.nbytes))
            except PushFailed as error:  # the receiver's loss; the receipts tell
                log.warning("round %d: %s", plan.round, error)
            except TimeoutError:
                log.warning("round %d: a push did not finish in time", plan.round)
