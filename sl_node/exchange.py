"""One sync round's sharded exchange between SL nodes (reduce-scatter, merge, all-gather)."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np

from swarm.merging import MergeMethod
from swarm.network.wire import chunk_serializer
from swarm.protos import sl_api_pb2 as pb
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.tensors import (
    Layout,
    WeightsError,
    block_byte_range,
    block_hashes,
    digest_from_hashes,
    iter_chunks,
    shard_ranges,
    verify_hash_list,
)

log = logging.getLogger("swarm.sl.exchange")

CHUNK_BYTES = 1 << 20
_SERVICE = pb.DESCRIPTOR.services_by_name["SwarmLearningPeer"].full_name
_SERIALIZE = chunk_serializer(pb.ExchangeChunk.DESCRIPTOR.fields_by_name["data"].number)
# Transfers get a floor rate for their deadlines: far below loopback or LAN speed,
# so only a peer that stopped answering hits it.
MIN_RATE_BYTES_S = 20e6


class RoundFailed(Exception):
    """The round cannot finish here (a peer stopped answering); the message says who."""


@dataclass(frozen=True)
class Peer:
    node_id: str
    endpoint: str
    fingerprint: str
    weight: int
    digest: bytes


@dataclass(frozen=True)
class RoundPlan:
    """A sealed round as this node runs it: participants in ledger order, shard owners."""

    round: int
    peers: tuple[Peer, ...]
    me: int
    layout: Layout

    @property
    def size(self) -> int:
        return len(self.peers)

    @property
    def shards(self) -> list[range]:
        return shard_ranges(self.layout.num_blocks, self.size)

    @property
    def contributors(self) -> list[int]:
        return [i for i, p in enumerate(self.peers) if p.weight > 0]

    def index_of(self, node_id: str, fingerprint: str) -> int | None:
        for i, peer in enumerate(self.peers):
            if peer.node_id == node_id and peer.fingerprint.lower() == fingerprint.lower():
                return i
        return None

    def byte_range(self, owner: int) -> tuple[int, int]:
        return block_byte_range(self.shards[owner], self.layout.nbytes)


@dataclass
class ByteCounter:
    sent: int = 0
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: int = 0, received: int = 0) -> None:
        with self.lock:
            self.sent += sent
            self.received += received


class RoundInbox:
    """What peers pushed to this node for one round; the exchange waits on it.

    Pushes may arrive before this node has learnt that the round is sealed, so the
    servicer waits (bounded) for the plan before it can check a push.
    """

    def __init__(self, round_number: int):
        self.round = round_number
        self._cv = threading.Condition()
        self.plan: RoundPlan | None = None
        self.updates: dict[int, memoryview] = {}    # sender index -> its blocks of my shard
        self.rejected: dict[int, str] = {}          # sender index -> why
        self.partials: dict[tuple[int, int], np.ndarray] = {}  # (step, sender) -> values
        self.merged: dict[int, memoryview] = {}     # owner index -> merged shard
        self.merged_hashes: dict[int, list[bytes]] = {}
        self._claimed: set[tuple[str, int]] = set()
        # Where pushes land, allocated with the plan: row i holds sender i's values of
        # my shard (the merge's input as is), and the merged ranges go straight to
        # their place in the round's result. No copies after the network's.
        self.update_rows: np.ndarray | None = None
        self.result: np.ndarray | None = None

    def set_plan(self, plan: RoundPlan) -> None:
        with self._cv:
            if self.plan is None:
                lo, hi = plan.byte_range(plan.me)
                wire = plan.layout.wire
                self.update_rows = np.empty((plan.size, (hi - lo) // wire.itemsize), dtype=wire)
                self.result = np.empty(plan.layout.size, dtype=wire)
            self.plan = plan
            self._cv.notify_all()

    def claim(self, store: str, sender: int) -> bool:
        """True once per (store, sender): a second push of the same thing is refused
        before it could overwrite bytes already verified."""
        with self._cv:
            if (store, sender) in self._claimed:
                return False
            self._claimed.add((store, sender))
            return True

    def update_buffer(self, sender: int) -> memoryview:
        return memoryview(self.update_rows[sender].view(np.uint8))

    def merged_buffer(self, owner: int) -> memoryview:
        lo, hi = self.plan.byte_range(owner)
        return memoryview(self.result.view(np.uint8))[lo:hi]

    def wait_plan(self, timeout_s: float) -> RoundPlan | None:
        with self._cv:
            self._cv.wait_for(lambda: self.plan is not None, timeout_s)
            return self.plan

    def put(self, store: str, key, value, extra=None) -> None:
        with self._cv:
            getattr(self, store)[key] = value
            if extra is not None:
                self.merged_hashes[key] = extra
            self._cv.notify_all()

    def wait_for(self, ready, deadline: float) -> bool:
        with self._cv:
            return self._cv.wait_for(ready, max(0.0, deadline - time.monotonic()))


class Exchange:
    """Runs this node's part of a sealed round with its peers.

    Every node sends and receives about 2·(N−1)/N model sizes: it pushes each owner
    that owner's range of its update (reduce-scatter), then the merged range it
    owns to every other participant (all-gather). Owners first agree, through a
    one-step all-reduce of votes, whose updates were valid everywhere, so every
    range is merged over the same set of updates.
    """

    def __init__(self, channel_for, inbox_for, counter: ByteCounter, peer_timeout_s: float):
        self._channel_for = channel_for   # endpoint -> grpc.Channel (mTLS, SL role pinned)
        self._inbox_for = inbox_for       # round -> RoundInbox
        self._counter = counter
        self._timeout_s = peer_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sl-push")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(self, plan: RoundPlan, flat: np.ndarray | None, hashes: list[bytes],
            merge: MergeMethod) -> tuple[np.ndarray, bytes, list[bytes]]:
        """Returns (merged flat vector, merged digest, merged block hashes)."""
        inbox = self._inbox_for(plan.round)
        inbox.set_plan(plan)
        others = [i for i in range(plan.size) if i != plan.me]
        mine = plan.shards[plan.me]
        lo, hi = plan.byte_range(plan.me)
        data = memoryview(flat.view(np.uint8)) if flat is not None else None
        started = time.monotonic()

        # Reduce-scatter: push every owner its range of our update.
        sends = []
        if data is not None:
            for j in others:
                a, b = plan.byte_range(j)
                sends.append(self._pool.submit(self._push_update, plan, j, data[a:b],
                                               plan.shards[j], hashes))
        expected = [i for i in plan.contributors if i != plan.me]
        deadline = started + self._deadline(len(expected) * (hi - lo))
        inbox.wait_for(lambda: all(i in inbox.updates or i in inbox.rejected
                                   for i in expected), deadline)
        for future in sends:
            self._settle(future, plan)
        phases = {"scatter": time.monotonic() - started}

        # Votes: an update counts only if every owner received its range intact.
        votes = np.zeros(plan.size)
        for i in plan.contributors:
            votes[i] = 1.0 if (i == plan.me or i in inbox.updates) else 0.0
        for i in expected:
            if i not in inbox.updates:
                why = inbox.rejected.get(i, f"nothing arrived within {deadline - started:.1f} s")
                log.warning("round %d: update from %s not taken: %s", plan.round,
                            plan.peers[i].node_id, why)
        step = [0]

        def allreduce(values: np.ndarray) -> np.ndarray:
            step[0] += 1
            return self._allreduce(plan, inbox, step[0], np.asarray(values, dtype=np.float64))

        mark = time.monotonic()
        counted = allreduce(votes)
        phases["vote"] = time.monotonic() - mark
        mark = time.monotonic()
        valid = [i for i in plan.contributors if counted[i] == plan.size]
        if not valid:
            raise RoundFailed(f"round {plan.round}: no valid update to merge")
        dropped = [plan.peers[i].node_id for i in plan.contributors if i not in valid]

        # Merge our range over the valid updates, in participant order.
        wire = plan.layout.wire
        if plan.me in valid:
            inbox.update_buffer(plan.me)[:] = data[lo:hi]
        rows = inbox.update_rows
        updates = rows if valid == list(range(plan.size)) else rows[valid]
        weights = np.array([plan.peers[i].weight for i in valid], dtype=np.float64)
        merged_bytes = inbox.merged_buffer(plan.me)
        merged_bytes[:] = np.ascontiguousarray(merge(updates, weights, allreduce),
                                               dtype=wire).view(np.uint8)
        my_hashes = block_hashes(merged_bytes, mine.start)
        phases["merge"] = time.monotonic() - mark
        mark = time.monotonic()

        # All-gather: our merged range to everyone, theirs to us.
        sends = [self._pool.submit(self._push_merged, plan, j, merged_bytes, mine, my_hashes)
                 for j in others]
        total = plan.layout.nbytes
        deadline = time.monotonic() + self._deadline(total - (hi - lo))
        inbox.wait_for(lambda: all(j in inbox.merged for j in others), deadline)
        for future in sends:
            self._settle(future, plan)
        missing = [plan.peers[j].node_id for j in others if j not in inbox.merged]
        if missing:
            raise RoundFailed(f"round {plan.round}: no merged range from {', '.join(missing)}")
        phases["gather"] = time.monotonic() - mark
        mark = time.monotonic()

        # Every merged range already sits in its place in inbox.result.
        result = inbox.result
        all_hashes: list[bytes] = []
        for j in range(plan.size):
            all_hashes += my_hashes if j == plan.me else inbox.merged_hashes[j]
        digest = digest_from_hashes(plan.layout.fingerprint, all_hashes)
        phases["assemble"] = time.monotonic() - mark
        log.debug("round %d exchange phases: %s", plan.round,
                  ", ".join(f"{name} {seconds * 1000:.0f} ms" for name, seconds in phases.items()))
        if dropped:
            log.warning("round %d merged without %s", plan.round, ", ".join(dropped))
        return result, digest, all_hashes

    # --- pieces ------------------------------------------------------------------------

    def _deadline(self, nbytes: int) -> float:
        return self._timeout_s + nbytes / MIN_RATE_BYTES_S

    def _settle(self, future, plan: RoundPlan) -> None:
        try:
            future.result(timeout=self._deadline(plan.layout.nbytes))
        except Exception as error:  # a failed push is the receiver's loss; say so and go on
            log.warning("round %d: %s", plan.round, error)

    def _stream(self, header: pb.ExchangeHeader, data: memoryview):
        yield pb.ExchangeChunk(header=header)
        for chunk in iter_chunks(data, CHUNK_BYTES):
            self._counter.add(sent=len(chunk))
            yield chunk  # sent as ExchangeChunk.data by _SERIALIZE, one copy

    def _push(self, plan: RoundPlan, j: int, method: str, header, data) -> None:
        peer = plan.peers[j]
        push = self._channel_for(peer.endpoint).stream_unary(
            f"/{_SERVICE}/{method}", request_serializer=_SERIALIZE,
            response_deserializer=pb.ExchangeAck.FromString)
        try:
            ack = push(self._stream(header, data), timeout=self._deadline(len(data)))
        except grpc.RpcError as error:
            raise RuntimeError(f"{method} to {peer.node_id} ({peer.endpoint}) failed: "
                               f"{error.code().name}: {error.details()}") from None
        if not ack.ok:
            raise RuntimeError(f"{peer.node_id} refused our {method}: {ack.error}")

    def _push_update(self, plan, j, data, blocks: range, hashes) -> None:
        header = pb.ExchangeHeader(round=plan.round, layout_fingerprint=plan.layout.fingerprint,
                                   first_block=blocks.start, num_blocks=len(blocks),
                                   total_bytes=len(data), block_hashes=hashes)
        self._push(plan, j, "PushUpdate", header, data)

    def _push_merged(self, plan, j, data, blocks: range, hashes) -> None:
        header = pb.ExchangeHeader(round=plan.round, layout_fingerprint=plan.layout.fingerprint,
                                   first_block=blocks.start, num_blocks=len(blocks),
                                   total_bytes=len(data), block_hashes=hashes)
        self._push(plan, j, "PushMerged", header, data)

    def _allreduce(self, plan: RoundPlan, inbox: RoundInbox, step: int,
                   values: np.ndarray) -> np.ndarray:
        others = [i for i in range(plan.size) if i != plan.me]
        message = pb.Partial(round=plan.round, step=step, values=values.tolist())
        for j in others:
            self._pool.submit(self._push_partial, plan, j, message)
        deadline = time.monotonic() + self._timeout_s
        inbox.wait_for(lambda: all((step, j) in inbox.partials for j in others), deadline)
        missing = [plan.peers[j].node_id for j in others if (step, j) not in inbox.partials]
        if missing:
            raise RoundFailed(f"round {plan.round}: {', '.join(missing)} did not answer "
                              f"within {self._timeout_s:.0f} s (all-reduce step {step})")
        # Summed in participant order on every node: bit-identical everywhere.
        total = np.zeros_like(values)
        for i in range(plan.size):
            part = values if i == plan.me else inbox.partials[(step, i)]
            if part.shape != values.shape:
                raise RoundFailed(f"round {plan.round}: {plan.peers[i].node_id} sent "
                                  f"{part.size} values at step {step}, expected {values.size}")
            total = total + part
        return total

    def _push_partial(self, plan: RoundPlan, j: int, message: pb.Partial) -> None:
        peer = plan.peers[j]
        stub = pb_grpc.SwarmLearningPeerStub(self._channel_for(peer.endpoint))
        try:
            stub.PushPartial(message, timeout=self._timeout_s)
        except grpc.RpcError as error:
            log.warning("round %d: partial to %s failed: %s", plan.round, peer.node_id,
                        error.code().name)


def verify_update_header(plan: RoundPlan, sender: int, header: pb.ExchangeHeader) -> None:
    """Checks a PushUpdate header against the sealed round; WeightsError says what is off."""
    peer = plan.peers[sender]
    if peer.weight == 0:
        raise WeightsError(f"{peer.node_id} checked in without an update (weight 0)")
    if header.layout_fingerprint != plan.layout.fingerprint:
        raise WeightsError(f"{peer.node_id}'s model layout differs from ours "
                           f"(shapes or dtypes of its weights do not match)")
    # The digest the sender checked in on the ledger vouches for its hash list.
    verify_hash_list(plan.layout, list(header.block_hashes), peer.digest, peer.node_id)
    mine = plan.shards[plan.me]
    if (header.first_block, header.num_blocks) != (mine.start, len(mine)):
        raise WeightsError(f"{peer.node_id} sent blocks {header.first_block}.."
                           f"{header.first_block + header.num_blocks}, this node owns "
                           f"{mine.start}..{mine.stop}")
    lo, hi = plan.byte_range(plan.me)
    if header.total_bytes != hi - lo:
        raise WeightsError(f"{peer.node_id} announced {header.total_bytes} bytes for "
                           f"{hi - lo} bytes of blocks")
