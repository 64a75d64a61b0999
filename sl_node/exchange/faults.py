"""The outgoing hook: the seam through which tests and experiments make this node
misbehave on purpose (hivemind's `Fault` enum, on the send path only).

Every message this node sends in a round passes `OutgoingHook.__call__` as an
`Outgoing` record; the hook returns what to send instead (empty: nothing; two:
the message twice). The default sends everything as is. Faults are switched on
only explicitly: `SWARM_FAULTS=veto_all,nan_partial` in the SL node's environment, or
run-sl's hidden `--experiment-faults veto_all,nan_partial` (which wins over the
environment), and the node says so loudly.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from swarm.tensors import block_hashes

from sl_node.exchange.plan import RoundPlan

log = logging.getLogger("swarm.sl.exchange")

FAULTS_ENV = "SWARM_FAULTS"


class Kind(enum.Enum):
    UPDATE = "update"      # PushUpdate: my update's range for owner `to`
    MERGED = "merged"      # PushMerged: my merged range for `to`
    PARTIAL = "partial"    # PushPartial: one all-reduce step (votes, distances)
    RECEIPTS = "receipts"  # my receipt bitmap, to the SN (`to` is None)
    COMMIT = "commit"      # my merged digest (`data`), to the SN (`to` is None)


class Fault(enum.Enum):
    VETO_ALL = "veto_all"                  # votes / receipts: reject every other update
    EQUIVOCATE_VOTES = "equivocate_votes"  # different votes to different peers
    STALL_AFTER_SEAL = "stall_after_seal"  # send nothing once the round is sealed
    NAN_PARTIAL = "nan_partial"            # all-reduce values all NaN
    CORRUPT_UPDATE = "corrupt_update"      # flip a byte of the update sent to one owner
    DUPLICATE_PARTIAL = "duplicate_partial"  # every partial twice, the second altered
    OTHER_LAYOUT = "other_layout"          # announce the update with another layout
    WITHHOLD_MERGED = "withhold_merged"    # never send my merged range (all-gather)
    # A lying shard owner: a different merged range, with hashes to match, to one peer
    # (the first other participant), which then diverges and must heal from the ledger.
    EQUIVOCATE_MERGED = "equivocate_merged"
    FALSE_COMMIT = "false_commit"          # commit a made-up merged digest to the ledger
    # A lying shard owner towards everyone: every merged range it pushes is scaled (finite,
    # hashes recomputed: plausible); only replicated ownership (shardReplicas >= 3) outvotes it.
    WRONG_PARTIAL = "wrong_partial"


@dataclass(frozen=True)
class Outgoing:
    """One message about to leave: `header`+`data` for pushes, `values` for partials
    and receipt bitmaps."""

    kind: Kind
    plan: RoundPlan
    to: int | None
    header: object = None
    data: memoryview | None = None
    values: np.ndarray | None = None
    step: int = 0        # PARTIAL: the all-reduce step
    vote: bool = False   # PARTIAL or RECEIPTS carrying validity votes

    def replace(self, **changes) -> Outgoing:
        return dataclasses.replace(self, **changes)


class OutgoingHook(Protocol):
    def __call__(self, message: Outgoing) -> list[Outgoing]:
        """What to send in place of message."""


def send_as_is(message: Outgoing) -> list[Outgoing]:
    return [message]


class FaultHook:
    """Applies a set of Faults to every outgoing message of this node."""

    def __init__(self, faults: set[Fault]):
        self.faults = frozenset(faults)

    def __call__(self, message: Outgoing) -> list[Outgoing]:
        f, kind = self.faults, message.kind
        if Fault.STALL_AFTER_SEAL in f:
            return []
        if kind is Kind.MERGED and Fault.WITHHOLD_MERGED in f:
            return []
        if kind is Kind.MERGED and Fault.EQUIVOCATE_MERGED in f and message.to == _first_other(
                message.plan):
            return [_other_merged_range(message)]
        if kind is Kind.MERGED and Fault.WRONG_PARTIAL in f:
            return [_other_merged_range(message, scale=1.5)]
        if kind is Kind.COMMIT and Fault.FALSE_COMMIT in f:
            made_up = hashlib.sha256(b"made up: " + bytes(message.data)).digest()
            return [message.replace(data=memoryview(made_up))]
        if kind in (Kind.PARTIAL, Kind.RECEIPTS) and message.values is not None:
            return self._values(message)
        if kind is Kind.UPDATE and Fault.CORRUPT_UPDATE in f and message.to == _first_other(
                message.plan):
            bad = bytearray(message.data)
            bad[len(bad) // 2] ^= 0xFF
            return [message.replace(data=memoryview(bytes(bad)))]
        if kind is Kind.UPDATE and Fault.OTHER_LAYOUT in f:
            header = type(message.header)()
            header.CopyFrom(message.header)
            header.layout_fingerprint = bytes(32 * [9])
            return [message.replace(header=header)]
        return [message]

    def _values(self, message: Outgoing) -> list[Outgoing]:
        f, values, plan = self.faults, message.values, message.plan
        is_vote = message.vote
        if Fault.NAN_PARTIAL in f and message.kind is Kind.PARTIAL:
            values = np.full_like(values, np.nan)
        if is_vote and Fault.VETO_ALL in f:
            values = _veto(values, plan)
        if is_vote and Fault.EQUIVOCATE_VOTES in f:
            if message.kind is Kind.RECEIPTS:  # two bitmaps to the SN: it keeps one
                return [message.replace(values=_veto(values, plan)), message]
            if message.to is not None and message.to % 2:
                values = _veto(values, plan)
        out = [message.replace(values=values)]
        if Fault.DUPLICATE_PARTIAL in f and message.kind is Kind.PARTIAL:
            out.append(message.replace(values=np.zeros_like(values)))
        return out


def _veto(values: np.ndarray, plan: RoundPlan) -> np.ndarray:
    vetoed = np.zeros_like(values)
    vetoed[plan.me] = values[plan.me]
    return vetoed


def _other_merged_range(message: Outgoing, scale: float = 1.0) -> Outgoing:
    """The merged range scaled and shifted by one (finite, and its hashes recomputed: the
    receiver cannot tell it from the range everyone else gets)."""
    plan = message.plan
    values = np.frombuffer(message.data, dtype=plan.layout.wire).astype(plan.layout.wire)
    if scale != 1.0:
        values *= np.asarray(scale, dtype=plan.layout.wire)
    values += np.ones(1, dtype=plan.layout.wire)
    data = memoryview(values.view(np.uint8))
    header = type(message.header)()
    header.CopyFrom(message.header)
    del header.block_hashes[:]
    header.block_hashes.extend(block_hashes(data, header.first_block))
    return message.replace(header=header, data=data)


def _first_other(plan: RoundPlan) -> int:
    return plan.others[0]


def parse_faults(text: str) -> set[Fault]:
    """'veto_all,nan_partial' -> {Fault.VETO_ALL, Fault.NAN_PARTIAL}; ValueError names
    an unknown one and lists the known."""
    faults = set()
    for name in filter(None, (part.strip().lower() for part in text.split(","))):
        try:
            faults.add(Fault(name))
        except ValueError:
            raise ValueError(f"unknown fault {name!r}; known: "
                             f"{', '.join(f.value for f in Fault)}") from None
    return faults


def hook_from_env(environ=os.environ) -> OutgoingHook:
    """The outgoing hook this node runs with: faults only if SWARM_FAULTS names some."""
    return hook_for(parse_faults(environ.get(FAULTS_ENV, "")))


def hook_for(faults: set[Fault]) -> OutgoingHook:
    """Sends as is without faults; with some, says loudly that this node misbehaves."""
    if not faults:
        return send_as_is
    log.warning("EXPERIMENT: this node misbehaves on purpose (%s=%s)", FAULTS_ENV,
                ",".join(sorted(f.value for f in faults)))
    return FaultHook(faults)
