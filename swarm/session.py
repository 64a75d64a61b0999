"""The training session: the settings every node of one swarm shares, parsed in one place.

The first SL node's Hello proposes a session (from its sidecar's SwarmCallback
parameters and model layout); the SN records it on the ledger (SessionConfig.config_json,
first writer wins), and every SL node then merges with the *recorded* session, never
with its own sidecar's wishes. A sidecar asking for other settings is told so:

- merge method or merge parameters, model layout: refused. Two nodes merging with
  different methods would merge a patchwork model or fail every round;
- min_peers, sync frequency, adaptive sync: warned. The ledger's min_peers governs the
  rounds whatever the callback says, and how often a node syncs is its own pacing
  (rounds wait for min_peers check-ins), so a difference costs time, not correctness.

The JSON on the ledger carries a schema version; sessions recorded before it (a bag of
callback parameters) still parse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm.merging import MERGE_METHODS, MergeMethod, get_merge

SCHEMA_VERSION = 1
# How a node whose training ended takes part until the swarm is done (SwarmCallback's
# checkinModelOnTrainEnd): its final local model, the last merged one, or no update.
CHECKIN_MODES = ("snapshot", "active", "inactive")
DEFAULT_MERGE_METHOD = "mean"
# More owners per shard than this costs more than sending every node every update.
MAX_SHARD_REPLICAS = 256


class SessionFormatError(ValueError):
    """The recorded or proposed session is not a session this code understands."""


@dataclass(frozen=True)
class Mismatch:
    """One setting a sidecar asked for that differs from the recorded session."""

    name: str          # the SwarmCallback parameter, as users spell it
    asked: Any
    recorded: Any
    refused: bool      # refused (the node cannot join) or only warned

    def line(self) -> str:
        verdict = "refused" if self.refused else "using the session's value"
        return (f"this sidecar asks for {self.name}={self.asked!r} but the swarm's session "
                f"(recorded on the ledger) uses {self.name}={self.recorded!r}: {verdict}")


@dataclass(frozen=True)
class Session:
    """One swarm's shared settings. Built by `from_hello` (a proposal) or `from_json`
    (the ledger's record); `to_json` is what the ledger records."""

    min_peers: int
    merge_method: str = DEFAULT_MERGE_METHOD
    merge_params: Mapping[str, Any] = field(default_factory=dict)
    sync_frequency: int | None = None
    use_adaptive_sync: bool = False
    layout_fingerprint: str = ""   # hex; empty only in sessions recorded before layouts
    # Owners per shard (replicated ownership; sl_node.exchange.plan): each shard is merged
    # by this many participants and taken from a strict majority of identical ranges.
    # Costs shard_replicas times the exchange's bytes; 1 (unreplicated) in sessions
    # recorded before it.
    shard_replicas: int = 1
    schema: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.merge_method not in MERGE_METHODS:
            raise SessionFormatError(f"merge method {self.merge_method!r} is not one of: "
                                     f"{', '.join(MERGE_METHODS)}")
        if not isinstance(self.merge_params, Mapping):
            raise SessionFormatError(f"merge_params {self.merge_params!r} is not a mapping")
        if (isinstance(self.shard_replicas, bool) or not isinstance(self.shard_replicas, int)
                or not 1 <= self.shard_replicas <= MAX_SHARD_REPLICAS):
            raise SessionFormatError(f"shardReplicas {self.shard_replicas!r} is not an integer "
                                     f"from 1 to {MAX_SHARD_REPLICAS}")
        # Frozen all the way down: a copy nobody else holds.
        object.__setattr__(self, "merge_params", dict(self.merge_params))

    @classmethod
    def from_hello(cls, params: Mapping[str, Any], layout_fingerprint: str) -> Session:
        """The session a sidecar's Hello proposes (its callback's config JSON, parsed)."""
        try:
            session = cls(min_peers=int(params.get("min_peers") or 1),
                          merge_method=params.get("merge_method") or DEFAULT_MERGE_METHOD,
                          merge_params=params.get("merge_params") or {},
                          sync_frequency=params.get("sync_frequency"),
                          use_adaptive_sync=bool(params.get("use_adaptive_sync", False)),
                          layout_fingerprint=layout_fingerprint,
                          shard_replicas=params.get("shard_replicas", 1))
        except (TypeError, ValueError) as error:
            raise SessionFormatError(f"the sidecar's session settings are malformed: "
                                     f"{error}") from None
        session.build_merge()  # a bad merge parameter is refused here, before the ledger
        return session

    @classmethod
    def from_json(cls, text: str, min_peers: int) -> Session:
        """The session the ledger recorded (config_json) with its min_peers."""
        try:
            data = json.loads(text) if text else {}
        except ValueError as error:
            raise SessionFormatError(f"the recorded session is not JSON: {error}") from None
        if not isinstance(data, dict):
            raise SessionFormatError("the recorded session is not a JSON object")
        schema = data.get("schema", 0)  # 0: recorded before the schema, as the callback sent it
        if not isinstance(schema, int) or schema > SCHEMA_VERSION:
            raise SessionFormatError(f"the recorded session has schema {schema!r}; this node "
                                     f"reads up to {SCHEMA_VERSION}: upgrade it")
        try:
            return cls(min_peers=int(min_peers),
                       merge_method=data.get("merge_method") or DEFAULT_MERGE_METHOD,
                       merge_params=data.get("merge_params") or {},
                       sync_frequency=data.get("sync_frequency"),
                       use_adaptive_sync=bool(data.get("use_adaptive_sync", False)),
                       layout_fingerprint=data.get("layout_fingerprint") or "",
                       shard_replicas=data.get("shard_replicas", 1),
                       schema=SCHEMA_VERSION)
        except (TypeError, ValueError) as error:
            raise SessionFormatError(f"the recorded session is malformed: {error}") from None

    def to_json(self) -> str:
        """What the ledger records (min_peers travels beside it, in SessionConfig)."""
        return json.dumps({"schema": self.schema, "merge_method": self.merge_method,
                           "merge_params": self.merge_params,
                           "sync_frequency": self.sync_frequency,
                           "use_adaptive_sync": self.use_adaptive_sync,
                           "layout_fingerprint": self.layout_fingerprint,
                           "shard_replicas": self.shard_replicas}, sort_keys=True)

    def build_merge(self) -> MergeMethod:
        try:
            return get_merge(self.merge_method, **self.merge_params)
        except (TypeError, ValueError) as error:
            raise SessionFormatError(f"mergeParams {self.merge_params!r}: {error}") from None

    def mismatches(self, asked: Session) -> list[Mismatch]:
        """Where `asked` (a sidecar's proposal) differs from this recorded session."""
        out = []
        for name, attr, refused in (("mergeMethod", "merge_method", True),
                                    ("mergeParams", "merge_params", True),
                                    # other owners per shard: another exchange altogether
                                    ("shardReplicas", "shard_replicas", True),
                                    ("minPeers", "min_peers", False),
                                    ("syncFrequency", "sync_frequency", False),
                                    ("useAdaptiveSync", "use_adaptive_sync", False)):
            mine, theirs = getattr(self, attr), getattr(asked, attr)
            if attr == "sync_frequency" and (mine is None or theirs is None):
                continue
            if mine != theirs:
                out.append(Mismatch(name, theirs, mine, refused))
        if (self.layout_fingerprint and asked.layout_fingerprint
                and self.layout_fingerprint != asked.layout_fingerprint):
            out.append(Mismatch("model layout", asked.layout_fingerprint[:16],
                                self.layout_fingerprint[:16], True))
        return out
