"""One sync round as a plain sequence of phases: CHECK_IN -> WAIT_SEAL -> EXCHANGE -> COMMIT.

`RoundDriver.run` takes this node's update to a merged model and returns a
`RoundOutcome`; every round it ends (merged or failed) is also handed to `record`,
which appends it as one JSON line to <data_dir>/rounds.jsonl: tests, the demo and the
benchmarks read those records, never log text. Decisions follow the SN's typed
reasons (swarm.network.sn_client.Reason), never the words of its messages.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from swarm.network.sn_client import Reason, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb
from swarm.tensors import Layout

from sl_node.exchange import Peer, RoundFailed, RoundPlan
from sl_node.exchange.faults import Kind, Outgoing, OutgoingHook, send_as_is

log = logging.getLogger("swarm.sl")

WAIT_SLICE_S = 5.0
# A PENDING commit reply (no majority of the participants has committed yet) is asked
# again every COMMIT_RETRY_S for up to COMMIT_PENDING_S before the node goes on with it.
COMMIT_RETRY_S = 0.25
COMMIT_PENDING_S = 30.0
OUTCOMES_FILE = "rounds.jsonl"


@dataclass(frozen=True)
class RoundOutcome:
    """How one round ended at this node."""

    round: int
    status: str                          # merged | failed | loaded (catch-up) | swarm_done
    reason: str = ""                     # why it failed, or what else to know
    participants: tuple[str, ...] = ()   # the sealed set, in ledger order
    contributors: tuple[str, ...] = ()   # participants with an update (weight > 0)
    dropped: dict[str, str] = field(default_factory=dict)  # node id -> why
    control_s: float = 0.0               # check-in to seal
    exchange_s: float = 0.0              # the sharded exchange and merge
    bytes_sent: int = 0
    bytes_received: int = 0
    model_bytes: int = 0
    merged_digest: str = ""              # hex
    merge_method: str = ""               # the session's, as this node ran it
    agreed: bool | None = None           # our digest equals the ledger's
    # The ledger's word on our merged digest (a strict majority of the participants
    # decides): agreed | disagreed (we load the majority's model) | pending (no majority
    # in time: ours kept, unconfirmed) | failed (no majority possible: round failed).
    merge_verdict: str = ""
    # Never silently different weights: our merged digest (merged_digest, as computed
    # here) differed from the one the ledger agreed for this round (agreed_digest,
    # hex); healed_from names the peer the agreed model came from in this round, the
    # model this node then keeps ("" if none served it yet: the node loads the swarm's
    # latest model before its next round, recorded as status "loaded").
    diverged: bool = False
    agreed_digest: str = ""
    healed_from: str = ""
    heal_s: float = 0.0                  # spent fetching the agreed model
    finished_at: float = 0.0             # unix seconds
    # Validation metrics (e.g. val_loss) the sidecar measured on the merged model of
    # round metrics_round (0: none). They reach the node after that round's outcome
    # was recorded, so they ride on the node's next outcome, whatever its status.
    metrics: dict[str, float] = field(default_factory=dict)
    # shardReplicas > 1: owners whose merged shard the other owners outvoted (node id ->
    # which shards); they sent the others a different range than the majority.
    outvoted: dict[str, str] = field(default_factory=dict)
    metrics_round: int = 0
    # The swarm's start under the mean: every node took the one contributor's model.
    start: bool = False

    @property
    def merged(self) -> bool:
        return self.status == "merged"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class OutcomeLog:
    """Appends outcomes to rounds.jsonl, one line per write (O_APPEND: a reader never
    sees half a line from a writer that died mid-round)."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()

    def __call__(self, outcome: RoundOutcome) -> None:
        line = (outcome.to_json() + "\n").encode()
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


def read_outcomes(path: Path) -> list[dict]:
    """The records of a rounds.jsonl (for tests, the demo and the benchmarks)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Update:
    """What this node brings to a round: its weights (None: no update) and their digest."""

    flat: np.ndarray | None
    weight: int
    digest: bytes
    hashes: list[bytes]


#: The first round of a swarm: under the mean it adopts one node's model
#: (RoundPlan.adopting_one).
START_ROUND = 1

#: RoundOutcome.reason of a round whose merged digests can reach no majority.
MERGE_NO_MAJORITY = "no_majority_merged_digest"


def _verdict(reply) -> str:
    """The SN's CommitMergedReply as agreed | disagreed | pending | failed (an SN without
    the verdict field answers with `agreed` only)."""
    return {pb.MERGE_AGREED: "agreed", pb.MERGE_DISAGREED: "disagreed",
            pb.MERGE_PENDING: "pending", pb.MERGE_FAILED: "failed"}.get(
        getattr(reply, "verdict", 0), "agreed" if reply.agreed else "disagreed")


class RoundDriver:
    """Runs rounds for one node until one merges or the swarm is done.

    `sn` is an SNClient (or a fake with the same methods), `exchange` runs a sealed
    round with peers (`run(plan, flat, hashes, merge)`), `counter` counts bytes, and
    `swarm_done()` says whether min_peers nodes have finished.
    """

    def __init__(self, sn, exchange, counter, node_id: str, layout: Layout, merge,
                 swarm_done: Callable[[], bool], record: Callable[[RoundOutcome], None],
                 rejoin: Callable[[], None] = lambda: None,
                 expect: Callable[[int], None] = lambda round_number: None,
                 heal: Callable[[RoundPlan, bytes], tuple | None] = lambda plan, digest: None,
                 hook: OutgoingHook = send_as_is,
                 publish: Callable[[int, tuple], None] = lambda round_number, merged: None,
                 wait_slice_s: float = WAIT_SLICE_S,
                 clock: Callable[[], float] = time.perf_counter):
        self.sn = sn
        self.exchange = exchange
        self.counter = counter
        self.node_id = node_id
        self.layout = layout
        self.merge = merge
        self._swarm_done = swarm_done
        self._record = record
        self._rejoin = rejoin
        self._expect = expect  # peers may push for a round once we check in for it
        # (plan, agreed digest) -> ((flat, digest, hashes), peer id) or None: the
        # agreed model, fetched from a peer that holds it
        self._heal = heal
        self._hook = hook  # the exchange's outgoing hook: the commit passes it too
        # (round, (flat, digest, hashes)): our merged model, served to peers (FetchModel)
        # from before the commit on, so that peers healing a divergence need not wait
        # for this node's own commit or heal
        self._publish = publish
        self.wait_slice_s = wait_slice_s
        self._clock = clock

    def run(self, round_number: int, update: Update,
            known_live: bool = False) -> tuple[RoundOutcome, tuple | None]:
        """Rounds from `round_number` on until one merges or the swarm is done; returns
        the last outcome and, when merged, (merged flat, merged digest, block hashes).
        `known_live`: the caller has just seen that the swarm is not done."""
        while True:
            if not known_live and self._swarm_done():
                return self._done(round_number, "min_peers nodes have finished"), None
            known_live = False
            started = self._clock()
            # CHECK_IN
            try:
                self._check_in(round_number, update)
            except SwarmNetworkError as error:
                if error.reason == Reason.SWARM_DONE:
                    return self._done(round_number, "the SN says the swarm is done"), None
                if error.reason == Reason.ROUND_OVER and error.next_round:
                    round_number = error.next_round
                    continue
                raise
            # WAIT_SEAL
            info, missing = self._wait_sealed(round_number, update)
            if info is None:
                return self._done(round_number, "the swarm ended while waiting"), None
            if isinstance(info, int):  # sealed without us: the SN named the next round
                log.info("round %d was sealed without this node; joining round %d",
                         round_number, info)
                round_number = info
                continue
            plan = self._plan(info)
            if plan is None:
                log.info("round %d was sealed without this node; joining round %d",
                         round_number, round_number + 1)
                round_number += 1
                continue
            flat, hashes = update.flat, update.hashes
            start = (plan.round == START_ROUND and getattr(self.merge, "name", "") == "mean"
                     and len(plan.contributors) > 1)
            if start:  # every node starts from one node's model, not the mean of them
                plan = plan.adopting_one()
                if plan.me not in plan.contributors:
                    flat, hashes = None, []
            participants = tuple(p.node_id for p in plan.peers)
            contributors = tuple(plan.peers[i].node_id for i in plan.contributors)
            dropped = {n: "did not check in before the seal" for n in missing
                       if n not in participants}
            control_s = self._clock() - started
            # EXCHANGE
            mark = self._clock()
            before = (self.counter.sent, self.counter.received)
            try:
                result = self.exchange.run(plan, flat, hashes, self.merge)
            except RoundFailed as error:
                self._outcome(plan, "failed", str(error), participants, contributors, dropped,
                              control_s, self._clock() - mark, before)
                log.warning("%s; trying again in round %d without it", error, round_number + 1)
                round_number += 1
                continue
            exchange_s = self._clock() - mark
            merged, merged_digest, merged_hashes = result
            # Updates refused or missing during the exchange, beside late check-ins.
            dropped.update(getattr(result, "dropped", None) or {})
            outvoted = dict(getattr(result, "outvoted", None) or {})
            if start:
                log.info("round %d starts the swarm: every node takes %s's model (under "
                         "the mean, the start adopts one model)", round_number, contributors[0])
            elif len(contributors) == 1:
                # Not a merge: the one update is passed on as it is; say so plainly.
                log.warning("round %d: only %s sent an update: every node takes its model "
                            "as it is (nothing to merge)", round_number, contributors[0])
            self._publish(round_number, (merged, merged_digest, merged_hashes))
            # COMMIT
            reply, committed = None, merged_digest
            commit = Outgoing(Kind.COMMIT, plan, None, data=memoryview(merged_digest))
            for out in self._hook(commit):
                committed = bytes(out.data)
                reply = self.sn.commit_merged(round_number, committed)
            if reply is None:  # a fault withheld the commit: the ledger's word still counts
                reply = self.sn.commit_merged(round_number, merged_digest)
            # No majority yet: ask again (no second vote, no transaction) for a while.
            deadline = self._clock() + COMMIT_PENDING_S
            while _verdict(reply) == "pending" and self._clock() < deadline:
                time.sleep(COMMIT_RETRY_S)
                reply = self.sn.commit_merged(round_number, committed)
            divergence, healed_from = {}, ""
            verdict = _verdict(reply)
            if verdict == "failed":
                # No digest can reach a majority of the participants (e.g. two that
                # disagree): the round failed for all; each keeps its own model.
                self._outcome(plan, "failed", MERGE_NO_MAJORITY, participants, contributors,
                              dropped, control_s, exchange_s, before,
                              merged_digest=merged_digest.hex(), agreed=False,
                              merge_verdict=verdict)
                log.warning("round %d: no merged digest has a majority of the participants; "
                            "trying again in round %d", round_number, round_number + 1)
                round_number += 1
                continue
            if verdict == "pending":
                # Too few participants committed in time: ours may still become the record.
                # Kept, and recorded as unconfirmed (merge_verdict), never silently.
                log.warning("round %d: no majority of the participants has committed a merged "
                            "digest yet; keeping ours", round_number)
            if verdict == "disagreed":
                ledger_digest = bytes(reply.ledger_digest)
                log.warning("round %d: our merged digest %s differs from the ledger's %s: "
                            "loading the agreed model from a peer", round_number,
                            merged_digest.hex()[:16], ledger_digest.hex()[:16])
                divergence = {"diverged": True, "agreed_digest": ledger_digest.hex()}
                mark = self._clock()
                healed = self._heal(plan, ledger_digest)
                divergence["heal_s"] = round(self._clock() - mark, 6)
                if healed is not None:
                    result, healed_from = healed
                    merged, _, merged_hashes = result
                    log.info("round %d: healed: took the agreed model from %s",
                             round_number, healed_from)
            outcome = self._outcome(
                plan, "merged", (f"the start: every node takes {contributors[0]}'s model"
                                 if start else "" if len(contributors) > 1
                                 else "a single contributor"),
                participants, contributors, dropped, control_s, exchange_s, before,
                merged_digest=merged_digest.hex(),
                agreed={"agreed": True, "disagreed": False}.get(verdict),  # None: pending
                healed_from=healed_from, merge_verdict=verdict, outvoted=outvoted,
                start=start, **divergence)
            if healed_from:
                merged_digest = bytes(reply.ledger_digest)
            size = self.layout.nbytes or 1
            log.info("round %d merged with %d peers in %.3f s (control %.3f s, exchange "
                     "%.3f s; sent %.2f, received %.2f model sizes)", round_number,
                     plan.size, control_s + exchange_s, control_s, exchange_s,
                     outcome.bytes_sent / size, outcome.bytes_received / size)
            return outcome, (merged, merged_digest, merged_hashes)

    # --- phases' pieces ----------------------------------------------------------------

    def _wait_sealed(self, round_number: int, update: Update):
        """(RoundInfo, node ids seen missing) once sealed; (next round, ...) when it was
        sealed without us; (None, ...) when the swarm ended meanwhile."""
        missing: set[str] = set()
        while True:
            info = self.sn.wait_round(round_number, self.wait_slice_s)
            if info.sealed:
                return info, missing
            if self._swarm_done():
                return None, missing
            missing = set(info.missing)
            log.info("round %d: waiting for peers (%d of min %d checked in; missing: %s)",
                     round_number, len(info.checked_in), info.min_peers,
                     ", ".join(info.missing) or "none")
            # Idempotent: an SN that restarted and lost its in-memory check-ins has it again.
            try:
                self._check_in(round_number, update)
            except SwarmNetworkError as error:
                if error.reason == Reason.SWARM_DONE:
                    return None, missing
                if error.reason == Reason.ROUND_OVER and error.next_round:
                    info = self.sn.wait_round(round_number, 0.1)
                    if info.sealed:
                        return info, missing
                    return error.next_round, missing
                raise

    def _check_in(self, round_number: int, update: Update) -> None:
        self._expect(round_number)
        try:
            self.sn.check_in(round_number, update.weight, update.digest)
        except SwarmNetworkError as error:
            if error.reason != Reason.INACTIVE:
                raise
            # Marked inactive (silent too long, e.g. a slow start): register again, once.
            log.warning("round %d: this node was inactive on the ledger; registering again",
                        round_number)
            self._rejoin()
            self.sn.check_in(round_number, update.weight, update.digest)

    def _plan(self, info) -> RoundPlan | None:
        peers = tuple(Peer(p.node_id, p.endpoint, p.fingerprint, p.weight, bytes(p.digest))
                      for p in info.participants)
        me = next((i for i, p in enumerate(peers) if p.node_id == self.node_id), None)
        if me is None:
            return None
        return RoundPlan(info.round, peers, me, self.layout)

    def _outcome(self, plan, status, reason, participants, contributors, dropped, control_s,
                 exchange_s, before, merged_digest="", agreed=None,
                 **divergence) -> RoundOutcome:
        outcome = RoundOutcome(
            round=plan.round, status=status, reason=reason, participants=participants,
            contributors=contributors, dropped=dropped, control_s=round(control_s, 6),
            exchange_s=round(exchange_s, 6), bytes_sent=self.counter.sent - before[0],
            bytes_received=self.counter.received - before[1],
            model_bytes=self.layout.nbytes, merged_digest=merged_digest, agreed=agreed,
            merge_method=getattr(self.merge, "name", ""), finished_at=time.time(),
            **divergence)
        self._record(outcome)
        return outcome

    def _done(self, round_number: int, reason: str) -> RoundOutcome:
        return RoundOutcome(round=round_number, status="swarm_done", reason=reason,
                            model_bytes=self.layout.nbytes, finished_at=time.time())
