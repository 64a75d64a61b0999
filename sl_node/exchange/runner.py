"""One sync round's sharded exchange: reduce-scatter, agree, merge, all-gather, confirm."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import Counter
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
    # Replicated ownership: node id -> which of its merged ranges the majority overruled.
    outvoted: dict[str, str] = field(default_factory=dict)

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


def take_majority(plan: RoundPlan, inbox: RoundInbox,
                  ranges: dict[tuple[int, int], list[bytes]]
                  ) -> tuple[list[bytes], dict[str, str]]:
    """Every shard's hashes, taken from a strict majority of its owners (identical
    block hashes of verified data: identical bytes); the majority's range copied
    into the result if its primary owner was outvoted. RoundFailed (NO_MAJORITY)
    where a shard has none. Returns (all hashes, outvoted node id -> shards)."""
    all_hashes: list[bytes] = []
    outvoted: dict[str, list[int]] = {}
    for shard in range(plan.size):
        owners = plan.owners(shard)
        if len(owners) == 1:
            all_hashes += ranges[(shard, owners[0])]
            continue
        votes = {owner: hashlib.sha256(b"".join(ranges[(shard, owner)])).digest()
                 for owner in owners}
        counts = Counter(votes.values())
        winner, count = counts.most_common(1)[0]
        if 2 * count <= len(owners):
            # Nobody blamed: without a majority, nobody can tell the liars from the honest.
            shares = ", ".join(f"{plan.peers[o].node_id}: {votes[o].hex()[:12]}"
                               for o in owners)
            raise RoundFailed(f"round {plan.round}: the {len(owners)} owners of shard "
                              f"{shard} sent no strict majority of identical merged "
                              f"ranges ({shares})", FailReason.NO_MAJORITY)
        chosen = next(k for k, o in enumerate(owners) if votes[o] == winner)
        if chosen:  # the primary owner's range lost: the majority's replaces it
            inbox.merged_buffer(shard)[:] = inbox.merged_buffer(shard, chosen)
        for owner in owners:
            if votes[owner] != winner:
                outvoted.setdefault(plan.peers[owner].node_id, []).append(shard)
        all_hashes += ranges[(shard, owners[chosen])]
    inbox.drop_replicas()
    for node_id, shards in outvoted.items():
        log.warning("round %d: %s was outvoted by the other owners of shard(s) %s: "
                    "its merged ranges were not taken", plan.round, node_id,
                    ", ".join(map(str, shards)))
    return all_hashes, {node_id: f"outvoted on shard(s) {', '.join(map(str, shards))}"
                        for node_id, shards in outvoted.items()}


def _replay(totals: list[np.ndarray], round_number: int):
    """An all-reduce that answers with the primary merge's sums, in order."""
    replay = iter(totals)

    def allreduce(values, vote=False):
        total = next(replay, None)
        if total is None or total.shape != np.shape(values):
            raise RoundFailed(f"round {round_number}: a replica's merge all-reduced other "
                              f"values than its primary's", FailReason.INCOMPLETE)
        return total

    return allreduce


class Exchange:
    """Runs this node's part of a sealed round with its peers.

    Every node sends and receives about 2·(N−1)/N model sizes: it pushes each owner
    that owner's range of its update (reduce-scatter), then the merged range it
    owns to every other participant (all-gather). With r owners per shard (replicated
    ownership) both phases carry r times that, and every shard is taken from a strict
    majority of its owners' identical merged ranges. Between the two, the agreement
    fixes one valid set for every owner; after the all-gather it confirms that
    every node got every range, or fails the round alike for all.
    """

    def __init__(self, channel_for, inboxes: Inboxes, counter: ByteCounter,
                 peer_timeout_s: float, agreement: Agreement | None = None,
                 hook=send_as_is, codec=IDENTITY, replicas: int = 1):
        self.inboxes = inboxes
        # Owners per shard (the session's shardReplicas; the node sets it once the
        # session is known): every round's plan runs with it.
        self.replicas = replicas
        self._transport = Transport(channel_for, counter, peer_timeout_s)
        self._link = Link(self._transport, hook, codec)
        self.agreement = agreement or VoteAgreement()

    def close(self) -> None:
        self._transport.close()

    def run(self, plan: RoundPlan, flat: np.ndarray | None, hashes: list[bytes],
            merge: MergeMethod) -> ExchangeResult:
        if self.replicas != 1:
            plan = dataclasses.replace(plan, replicas=self.replicas)
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
        owned = plan.owned(plan.me)  # (shard, rank), my primary shard first
        mine_bytes = sum(hi - lo for lo, hi in map(plan.byte_range, (s for s, _ in owned)))
        data = memoryview(flat.view(np.uint8)) if flat is not None else None
        ctx = _Round(plan, inbox, link)
        started = time.monotonic()

        # Reduce-scatter: push every owner of every shard its range of our update.
        sends = []
        if data is not None:
            sends = [self._submit(inbox, j, update_msg.push_update, link, plan, j, data, hashes,
                                  shard)
                     for shard in range(plan.size) for j in plan.owners(shard) if j != plan.me]
        store = inbox.updates
        expected = [i for i in plan.contributors if i != plan.me]
        deadline = started + transport.deadline_s(len(expected) * mine_bytes)
        inbox.wait_for(lambda: all(all((s, i) in store.accepted or (s, i) in store.refused
                                       for s, _ in owned) or i in inbox.unreachable
                                   for i in expected), deadline)
        self._settle(sends, plan)
        trim_heap()  # the scatter's buffers, before the merge and the all-gather add theirs
        phases = {"scatter": time.monotonic() - started}
        received = tuple((i == plan.me and data is not None)
                         or all((s, i) in store.accepted for s, _ in owned)
                         for i in range(plan.size))
        dropped = {}
        for i in expected:
            if not received[i]:
                why = next((store.refused[(s, i)] for s, _ in owned if (s, i) in store.refused),
                           f"nothing arrived within {deadline - started:.1f} s")
                dropped[plan.peers[i].node_id] = why

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

        # Merge each shard we own over the valid updates, in participant order.
        mark = time.monotonic()
        wire = plan.layout.wire
        weights = np.array([plan.peers[i].weight for i in valid], dtype=np.float64)
        my_hashes: dict[int, list[bytes]] = {}
        merged_ok = True
        # Only the primary shards' merges all-reduce (they partition the model, so the
        # sums are the whole model's, as unreplicated); a replica's merge of the same
        # shard replays those sums, which every node received alike: the same branches
        # and the same bytes as the shard's primary owner.
        totals: list[np.ndarray] = []

        def recording(values, vote=False):
            totals.append(ctx.allreduce(values, vote))
            return totals[-1]

        for shard, rank in owned:
            lo, hi = plan.byte_range(shard)
            if plan.me in valid:
                inbox.update_buffer(plan.me, shard)[:] = data[lo:hi]
            rows = inbox.update_rows[shard]
            # The valid rows moved down in place (ascending, so no row is overwritten
            # before it moved): the merge's input without a copy of N shards.
            for k, i in enumerate(valid):
                if k != i:
                    rows[k] = rows[i]
            allreduce = recording if rank == 0 else _replay(totals, plan.round)
            try:
                # Straight into this shard's place in the result (or its replica buffer).
                merge(rows[:len(valid)], weights, allreduce,
                      out=np.frombuffer(inbox.merged_buffer(shard, rank), dtype=wire))
            except RoundFailed as error:
                # A partial missing or refused: the others must learn it from our
                # receipts, so go on to the all-gather without our ranges.
                log.warning("%s", error)
                merged_ok = False
                break
            del rows
            my_hashes[shard] = block_hashes(inbox.merged_buffer(shard, rank),
                                            plan.shards[shard].start)
        inbox.drop_updates()
        phases["merge"] = time.monotonic() - mark

        # All-gather: our merged ranges to everyone, every owner's to us.
        mark = time.monotonic()
        sends = ([self._submit(inbox, j, merged_msg.push_merged, link, plan, j,
                               inbox.merged_buffer(shard, rank), my_hashes[shard], shard)
                  for shard, rank in owned for j in others] if merged_ok else [])
        store = inbox.merged
        awaited = [(shard, j) for shard in range(plan.size) for j in plan.owners(shard)
                   if j != plan.me]
        deadline = time.monotonic() + transport.deadline_s(
            plan.r * plan.layout.nbytes - mine_bytes)
        inbox.wait_for(lambda: all(key in store.accepted or key in store.refused
                                   or key[1] in inbox.unreachable for key in awaited), deadline)
        self._settle(sends, plan)
        # Receipts of the all-gather: j's partials (up to the step we reached) and,
        # if we merged at all, j's merged ranges. A node that could not merge names
        # only whose partials failed it, not the ranges that then failed everyone.
        partials_ok = self._partials_ok(plan, inbox, ctx.step)
        gathered = tuple(merged_ok if j == plan.me else
                         partials_ok[j] and (not merged_ok or all(
                             (s, j) in store.accepted for s, _ in plan.owned(j)))
                         for j in range(plan.size))
        phases["gather"] = time.monotonic() - mark
        mark = time.monotonic()
        ctx.deadline = deadline
        self.agreement.confirm(ctx, gathered)
        if not merged_ok or any(key not in store.accepted for key in awaited):  # the agreement let it pass: cannot be, but never assemble holes
            raise RoundFailed(f"round {plan.round}: merged ranges missing here",
                              FailReason.INCOMPLETE)
        phases["confirm"] = time.monotonic() - mark

        # Every shard's range: its primary owner's, already in its place in inbox.result
        # (unreplicated), or the strict majority of its owners' identical ranges.
        ranges = {key: value[1] for key, value in store.accepted.items()}
        ranges.update({(shard, plan.me): my_hashes[shard] for shard, _ in owned})
        all_hashes, outvoted = take_majority(plan, inbox, ranges)
        digest = digest_from_hashes(plan.layout.fingerprint, all_hashes)
        log.debug("round %d exchange phases: %s", plan.round,
                  ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in phases.items()))
        if dropped:
            log.warning("round %d merged without %s", plan.round, ", ".join(dropped))
        return ExchangeResult(inbox.result, digest, all_hashes, dropped, phases, outvoted)

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
