"""A sealed round as this node runs it: who takes part, who owns which range, and
how a round fails (typed, so the round driver decides on codes, not on text).

Replicated ownership: with `replicas` r (the session's shardReplicas), shard s is
merged by the r participants s, s+1, …, s+r−1 (mod N), its primary owner first. Every
participant owns exactly r shards (balanced), and every node derives the same owners
from the sealed participant order alone. r is capped at N: a round with fewer
participants than r has every participant own every shard. r = 1 is the unreplicated
exchange: participant i owns shard i, as before.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from dataclasses import dataclass

from swarm.tensors import Layout, block_byte_range, shard_ranges


@dataclass(frozen=True)
class Peer:
    """One participant of a sealed round (the ledger's Member, as the round sees it)."""

    node_id: str
    endpoint: str
    fingerprint: str
    weight: int      # 0: takes part (owns a range) without an update of its own
    digest: bytes    # the digest it checked in: vouches for the hashes it sends


@dataclass(frozen=True)
class RoundPlan:
    """A sealed round: participants in ledger order, each owning one contiguous
    range of blocks. The one place that decides who owns what."""

    round: int
    peers: tuple[Peer, ...]
    me: int
    layout: Layout
    replicas: int = 1  # the session's shardReplicas; `r` is what this round uses

    def __post_init__(self) -> None:
        if self.replicas < 1:
            raise ValueError(f"shard replicas must be >= 1, got {self.replicas}")

    @property
    def size(self) -> int:
        return len(self.peers)

    @functools.cached_property  # asked for per push and per shard: computed once
    def shards(self) -> list[range]:
        """Shard i's block range (participant i is its primary owner), in participant order."""
        return shard_ranges(self.layout.num_blocks, self.size)

    @property
    def r(self) -> int:
        """Owners per shard this round: the session's replicas, at most every participant."""
        return min(self.replicas, self.size)

    def owners(self, shard: int) -> tuple[int, ...]:
        """Who merges shard `shard`, primary first (rank k is the k-th of them)."""
        return tuple((shard + k) % self.size for k in range(self.r))

    def owned(self, owner: int) -> list[tuple[int, int]]:
        """(shard, rank) of every shard `owner` merges, its primary shard (its own
        index, rank 0) first."""
        return [((owner - k) % self.size, k) for k in range(self.r)]

    def rank(self, owner: int, shard: int) -> int | None:
        """owner's rank among shard's owners, or None if it does not own it."""
        k = (owner - shard) % self.size
        return k if k < self.r else None

    def shard_at(self, owner: int, first_block: int, num_blocks: int) -> list[int]:
        """The shards of `owner` a header's block range names (several only for the
        empty shards of a model with fewer blocks than participants)."""
        return [s for s, _ in self.owned(owner)
                if (self.shards[s].start, len(self.shards[s])) == (first_block, num_blocks)]

    @property
    def contributors(self) -> list[int]:
        """Participants with an update of their own (weight > 0)."""
        return [i for i, p in enumerate(self.peers) if p.weight > 0]

    def adopting_one(self) -> RoundPlan:
        """The start round's plan under the mean: only the contributor whose update has
        the lowest digest keeps its weight, so every node starts from that one model.
        The mean of independent random initialisations is a poor start (its weights
        shrink by about the square root of the number of nodes and mix unrelated units);
        the lowest digest, unlike the first to check in, is the same choice on every run."""
        chosen = min(self.contributors, key=lambda i: (self.peers[i].digest, i), default=None)
        if chosen is None:
            return self
        peers = tuple(p if i == chosen else dataclasses.replace(p, weight=0)
                      for i, p in enumerate(self.peers))
        return dataclasses.replace(self, peers=peers)

    @property
    def others(self) -> list[int]:
        return [i for i in range(self.size) if i != self.me]

    def index_of(self, node_id: str, fingerprint: str) -> int | None:
        for i, peer in enumerate(self.peers):
            if peer.node_id == node_id and peer.fingerprint.lower() == fingerprint.lower():
                return i
        return None

    def byte_range(self, shard: int) -> tuple[int, int]:
        """Shard `shard`'s bytes in the flat vector (shard i: participant i's primary)."""
        return block_byte_range(self.shards[shard], self.layout.nbytes)

    def names(self, indices) -> str:
        return ", ".join(self.peers[i].node_id for i in indices)


class FailReason(enum.Enum):
    """Why a round failed here; the driver retries the next round for every one."""

    NO_VALID_UPDATE = "no_valid_update"   # nothing left to merge
    PEER_SILENT = "peer_silent"           # a peer did not answer in time (vote fallback)
    DISPUTE = "dispute"                   # receipts disagree: `blamed` are excluded by the SN
    STALLED = "stalled"                   # participants sent no receipts: `blamed`
    INCOMPLETE = "incomplete"             # a merged range is missing (vote fallback)
    AGREEMENT_UNAVAILABLE = "agreement_unavailable"  # the SN froze no receipts in time
    # Replicated ownership: a shard's owners sent no strict majority of identical merged
    # ranges (more liars than the replicas outvote): nobody takes any of them.
    NO_MAJORITY = "no_majority"


class RoundFailed(Exception):
    """The round cannot finish; the message says who and why.

    `reason` is typed; `blamed` names the participants the agreement found at fault
    (the SN leaves them out of the next seals), identical on every honest node.
    """

    def __init__(self, message: str, reason: FailReason = FailReason.PEER_SILENT,
                 blamed: tuple[str, ...] = ()):
        super().__init__(message)
        self.reason = reason
        self.blamed = blamed
