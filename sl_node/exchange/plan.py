"""A sealed round as this node runs it: who takes part, who owns which range, and
how a round fails (typed, so the round driver decides on codes, not on text)."""

from __future__ import annotations

import enum
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

    @property
    def size(self) -> int:
        return len(self.peers)

    @property
    def shards(self) -> list[range]:
        """The block range each participant owns, in participant order."""
        return shard_ranges(self.layout.num_blocks, self.size)

    @property
    def contributors(self) -> list[int]:
        """Participants with an update of their own (weight > 0)."""
        return [i for i, p in enumerate(self.peers) if p.weight > 0]

    @property
    def others(self) -> list[int]:
        return [i for i in range(self.size) if i != self.me]

    def index_of(self, node_id: str, fingerprint: str) -> int | None:
        for i, peer in enumerate(self.peers):
            if peer.node_id == node_id and peer.fingerprint.lower() == fingerprint.lower():
                return i
        return None

    def byte_range(self, owner: int) -> tuple[int, int]:
        return block_byte_range(self.shards[owner], self.layout.nbytes)

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
