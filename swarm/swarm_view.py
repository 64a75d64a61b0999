"""What an SN knows of its swarm at one moment: the typed records of `swarm status`.

The SN's read model (`sn_node.read_model`) builds a `Snapshot`; the SN API carries it
(`GetStatus` with `with_view`) as the JSON of `Snapshot.to_dict()`, and clients rebuild
it with `Snapshot.from_dict`. The records live in the library so that clients
(`swarm status`, the dashboard) need not import the SN program.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _plain(value):
    """JSON-ready data of a record: dataclasses.asdict's result, ten times faster (it
    deep-copies every leaf; these records hold only str, numbers, lists and dicts)."""
    if hasattr(value, "__dataclass_fields__"):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(cls, data: dict):
    """A record from a dict, ignoring keys a newer SN may add."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class MemberView:
    """One member of the swarm as this SN sees it."""

    node_id: str
    role: str                      # sn | sl | swci
    status: str                    # active | inactive | revoked (the ledger's)
    endpoint: str
    alive: bool                    # heartbeats reach this SN
    heartbeat_age_s: float | None  # since its last heartbeat here; None: never heard
    controlled_here: bool          # registered through this SN
    finished: bool                 # marked its training finished


@dataclass(frozen=True)
class SessionView:
    """The session recorded on the ledger."""

    configured: bool
    min_peers: int
    config: dict                   # the recorded settings (merge method, ...)
    finished_count: int            # nodes that finished training
    swarm_done: bool               # finished_count >= min_peers


@dataclass(frozen=True)
class NodeOutcome:
    """What one SL node reported of a round (its RoundOutcome, summarised)."""

    node_id: str
    status: str                    # merged | failed
    reason: str
    round_s: float                 # check-in to merged (control + exchange)
    exchange_s: float
    bytes_sent: int
    bytes_received: int
    dropped: dict[str, str]        # node id -> why its update was not taken
    agreed: bool | None
    # Validation metrics (e.g. val_loss) of this round's merged model as the node's
    # sidecar measured it; they arrive with the node's next report.
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class RoundView:
    """One round: its check-ins, seal, merge and what participants reported."""

    round: int
    state: str                     # open | sealed | merged
    checked_in: list[str]          # node ids (while open: those this SN knows of)
    participants: list[str]        # the sealed set, in ledger order
    opened_at: float | None        # unix seconds of the first check-in seen
    sealed_at: float | None
    merged_at: float | None
    seal_wait_s: float | None      # first check-in to seal
    merge_s: float | None          # seal to merged digest on the ledger
    merged_digest: str             # hex; "" until committed
    disagreed: list[str]           # participants that committed another merged digest
    dropped: dict[str, str]        # union of the participants' reports
    bytes_sent: int                # sum over the reports
    bytes_received: int
    reports: list[NodeOutcome] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict) -> RoundView:
        data = dict(data)
        data["reports"] = [_build(NodeOutcome, r) for r in data.get("reports", [])]
        return _build(cls, data)


@dataclass(frozen=True)
class WaitView:
    """The round in progress and who it waits for."""

    round: int
    checked_in: list[str]
    missing: list[str]             # SL members (not revoked) that have not checked in
    short_by: int                  # check-ins still needed to reach min_peers
    waiting_s: float | None        # since the round's first check-in; None: none yet


@dataclass(frozen=True)
class EventView:
    """One thing that happened (mostly a ledger event), newest last in a snapshot."""

    seq: int
    at: float                      # unix seconds when this SN learnt of it
    kind: str                      # check_in | sealed | merged | mismatch | member | config |
    #                                finished | revoked | outcome
    round: int | None = None
    node_id: str = ""
    detail: str = ""


@dataclass(frozen=True)
class Snapshot:
    """Everything `swarm status` shows, from one SN at one moment."""

    version: int                   # grows with every change the SN applies
    at: float                      # unix seconds
    sn_node_id: str
    sentinel: bool
    ledger_kind: str
    contract_address: str
    chain_id: int
    block_number: int              # the last block the SN's ledger thread has read
    session: SessionView
    members: list[MemberView]
    current: WaitView | None       # None before the session is configured
    last_sealed_round: int
    latest_merged_round: int
    rounds: list[RoundView]        # recent rounds, oldest first
    events: list[EventView]        # recent events, oldest first

    @property
    def finished_nodes(self) -> list[str]:
        return [m.node_id for m in self.members if m.finished]

    def to_dict(self) -> dict:
        return _plain(self)

    @classmethod
    def from_dict(cls, data: dict) -> Snapshot:
        data = dict(data)
        data["session"] = _build(SessionView, data["session"])
        data["members"] = [_build(MemberView, m) for m in data.get("members", [])]
        data["current"] = _build(WaitView, data["current"]) if data.get("current") else None
        data["rounds"] = [RoundView.from_dict(r) for r in data.get("rounds", [])]
        data["events"] = [_build(EventView, e) for e in data.get("events", [])]
        return _build(cls, data)
