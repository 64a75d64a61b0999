"""The inproc backend: a task's N nodes as threads of one process, no network.

Each node runs ``swarm.lab.tasks.train_node`` with a real ``SwarmCallbackCore``; its
channel here is an ``InProcChannel`` to a shared ``RoundHub`` instead of a
``LocalChannel`` to an SL node. The hub does what the swarm does for the callback:

- the first Hello fixes the session (``swarm.session.Session``, as the ledger records
  it) and its merge method (``Session.build_merge``, the SL node's own call);
- a round is sealed when every node has either checked in for it or finished (a real
  swarm with min_peers = N seals the same rounds: a finished node joins every round
  others still sync, contributing what its checkin mode says: its final local model
  for snapshot, the latest merged one for active, nothing for inactive);
- the merge takes the contributors' flat vectors with their node_weightage, in the
  order the ledger lists a LocalSwarm's participants (by member key), exactly as an SL
  node calls the merge method, shard by shard with the all-reduce summed in participant
  order for distance-based methods, and casts to the wire dtype; every node loads it;
- a node finishing in snapshot mode first takes part in one more round with its final
  model (as its SL node does);
- once every node has finished, each gets the last merged model as the final one.

The learning is deterministic from the seed: threads only wait for one another, every
value is computed by one node's thread or by the hub in node order.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import numpy as np

from swarm.merging import no_allreduce
from swarm.protos import local_api_pb2 as pb
from swarm.session import Session
from swarm.tensors import block_byte_range, shard_ranges, weights_digest

from .launch import ledger_order, sl_node_id
from .tasks import NodeOutcome, Task, TaskData, diverged_error, swarm_result, train_node

JOIN_TIMEOUT_S = 3600.0


class HubAborted(RuntimeError):
    """Another node of this task failed: this one stops too."""


class RoundHub:
    """The swarm as N in-process nodes see it: sessions, rounds and merges.

    One node runs at a time: a node that checks in (or finishes) hands the turn to the
    next node, in cyclic order, that is not waiting for a round; the node whose check-in
    completes a round keeps it. So the threads never compete for the interpreter, and a
    round costs N hand-offs of a few microseconds each.
    """

    def __init__(self, nodes: int):
        self.nodes = nodes
        self.order = ledger_order(nodes)    # participant order, as in a real swarm
        self._lock = threading.Lock()
        self._go = [threading.Event() for _ in range(nodes)]
        self._go[0].set()                   # node 0 starts
        self.session: Session | None = None
        self._merge = None
        self._layout = None
        self._wire = None
        self.round = 0                      # rounds merged so far
        self._check_ins: dict[int, tuple[np.ndarray, int]] = {}
        self._finished: dict[int, tuple[np.ndarray | None, int, str]] = {}
        self.latest: np.ndarray | None = None
        self.error: BaseException | None = None

    @property
    def done(self) -> bool:
        return len(self._finished) == self.nodes

    # ---- turns ---------------------------------------------------------------------------

    def wait_turn(self, index: int) -> None:
        """Blocks until node `index` may run (or raises HubAborted)."""
        event = self._go[index]
        while not event.wait(1.0):
            if self.error is not None:
                break
        event.clear()
        if self.error is not None:
            raise HubAborted(f"another node failed: {self.error}")
        if self.done:
            event.set()  # the end: everyone runs freely from now on

    def _pass_turn(self, me: int) -> None:
        """Called with the lock held by `me`, which is now waiting for a round or the end."""
        for step in range(1, self.nodes):
            j = (me + step) % self.nodes
            if j not in self._check_ins and j not in self._finished:
                self._go[j].set()
                return
        raise RuntimeError("no node can run: the round hub is stuck (a bug)")

    # ---- what the channels call ----------------------------------------------------

    def hello(self, index: int, params, layout) -> pb.HelloReply:
        with self._lock:
            asked = Session.from_hello(json.loads(params.to_config_json()),
                                       layout.fingerprint.hex())
            if self.session is None:  # the first Hello fixes the session, as on the ledger
                self.session, self._merge, self._layout = asked, asked.build_merge(), layout
                self._wire = layout.wire
            return pb.HelloReply(node_id=sl_node_id(index), min_peers=self.session.min_peers,
                                 config_json=self.session.to_json(),
                                 merged_model_available=False)

    def sync(self, index: int, flat: np.ndarray, weight: int) -> tuple[pb.SyncResult, np.ndarray]:
        with self._lock:
            target = self.round + 1
            self._check_ins[index] = (np.array(flat, copy=True), weight)
            self._seal_if_ready()
            if self.round < target:
                self._pass_turn(index)
        if self.round < target:
            self.wait_turn(index)
        return pb.SyncResult(round=target, participants=self.nodes), self.latest.copy()

    def finish(self, index: int, flat: np.ndarray, weight: int,
               mode: str) -> tuple[pb.SyncResult, np.ndarray | None]:
        if mode == "snapshot" and flat is not None:
            # As the SL node does: the final model goes into one more round first.
            self.sync(index, flat, weight)
        with self._lock:
            if mode == "inactive":
                contribution = (None, 0, mode)
            elif mode == "active":
                contribution = (self.latest, weight, mode)
            else:
                contribution = (np.array(flat, copy=True), weight, mode)
            self._finished[index] = contribution
            self._seal_if_ready()
            if self.done:
                for event in self._go:
                    event.set()
            else:
                self._pass_turn(index)
        self.wait_turn(index)
        final = None if self.latest is None else self.latest.copy()
        return pb.SyncResult(round=self.round, swarm_done=True,
                             message="the final swarm model"), final

    def abort(self, error: BaseException) -> None:
        with self._lock:
            if self.error is None:
                self.error = error
        for event in self._go:
            event.set()

    # ---- rounds ------------------------------------------------------------------------

    def _seal_if_ready(self) -> None:
        if not self._check_ins:
            return  # nobody syncs: no round (finished nodes only wait for the end)
        if len(self._check_ins) + len(self._finished) < self.nodes:
            return
        rows, weights = [], []
        for i in self.order:
            if i in self._check_ins:
                flat, weight = self._check_ins[i]
            else:
                flat, weight, _ = self._finished[i]
            if flat is not None and weight > 0:
                rows.append(flat)
                weights.append(weight)
        if self.round == 0 and self._merge.name == "mean" and len(rows) > 1:
            # The SL node's start round: one model, the lowest digest's (RoundPlan.adopting_one).
            digests = [weights_digest(self._layout, row)[0] for row in rows]
            rows = [rows[min(range(len(rows)), key=lambda k: (digests[k], k))]]
            weights = [1]
        merged = np.ascontiguousarray(
            self._sharded_merge(np.stack(rows), np.array(weights, dtype=np.float64)),
            dtype=self._wire)
        self.latest = merged
        self.round += 1
        self._check_ins.clear()
        for i, (flat, weight, mode) in list(self._finished.items()):
            if mode == "active":  # an active finished node contributes the latest merged model
                self._finished[i] = (merged, weight, mode)


    def _sharded_merge(self, updates: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The merge as the participants of a real round compute it: each owns a range of
        blocks (swarm.tensors.shard_ranges, in participant order) and distance-based
        methods sum their partials across owners in participant order. Coordinate-wise
        methods, and models of one block, give the whole-vector merge exactly."""
        layout, size = self._layout, self.nodes
        ranges = [tuple(b // layout.itemsize for b in block_byte_range(r, layout.nbytes))
                  for r in shard_ranges(layout.num_blocks, size)]
        if self._merge.coordinate_wise or sum(hi > lo for lo, hi in ranges) <= 1:
            return self._merge(updates, weights, no_allreduce)
        partials: list[np.ndarray | None] = [None] * size
        barrier = threading.Barrier(size)
        out: list[np.ndarray | None] = [None] * size
        errors: list[BaseException] = []

        def owner(p: int) -> None:
            def allreduce(values: np.ndarray) -> np.ndarray:
                partials[p] = np.asarray(values, dtype=np.float64)
                barrier.wait()
                total = np.zeros_like(partials[p])
                for i in range(size):  # participant order, as sl_node's all-reduce sums
                    total = total + partials[i]
                barrier.wait()  # nobody posts the next step's partial before all summed
                return total
            lo, hi = ranges[p]
            try:
                out[p] = self._merge(updates[:, lo:hi], weights, allreduce)
            except BaseException as error:  # noqa: BLE001 - re-raised below
                errors.append(error)
                barrier.abort()

        threads = [threading.Thread(target=owner, args=(p,), daemon=True) for p in range(size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise next((e for e in errors if not isinstance(e, threading.BrokenBarrierError)),
                       errors[0])
        return np.concatenate(out)


class InProcChannel:
    """One node's end of the hub, with LocalChannel's calls."""

    def __init__(self, hub: RoundHub, index: int):
        self.hub, self.index = hub, index

    def hello(self, params, layout, framework: str) -> pb.HelloReply:
        return self.hub.hello(self.index, params, layout)

    def sync(self, flat: np.ndarray, weight: int, kind: str = "regular"):
        return self.hub.sync(self.index, flat, weight)

    def finish(self, flat: np.ndarray, weight: int, mode: str = "inactive"):
        return self.hub.finish(self.index, flat, weight, mode)

    def close(self) -> None:
        pass


_ENV_LOCK = threading.Lock()


def run_inproc(task: Task, data: TaskData, workdir: Path) -> dict:
    """Runs the task's nodes as threads on one hub; the result row (see tasks.run_task)."""
    hub = RoundHub(task.nodes)
    model_dir = workdir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    outcomes: list[NodeOutcome | None] = [None] * task.nodes
    errors: list[BaseException] = []

    def node(index: int) -> None:
        try:
            hub.wait_turn(index)
            outcomes[index] = train_node(task, data, index, InProcChannel(hub, index), model_dir)
        except HubAborted:
            pass
        except BaseException as error:  # noqa: BLE001 - handed to the caller below
            errors.append(error)
            hub.abort(error)

    started = time.perf_counter()
    # The callback core puts saved_models under $MODEL_DIR: point it into this task.
    with _ENV_LOCK:
        previous = os.environ.get("MODEL_DIR")
        os.environ["MODEL_DIR"] = str(model_dir)
        try:
            threads = [threading.Thread(target=node, args=(i,), name=f"lab-node-{i}", daemon=True)
                       for i in range(task.nodes)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(JOIN_TIMEOUT_S)
        finally:
            if previous is None:
                os.environ.pop("MODEL_DIR", None)
            else:
                os.environ["MODEL_DIR"] = previous
    wall_s = time.perf_counter() - started
    if errors:
        message = diverged_error(errors[0])
        if message is None:
            raise errors[0]
        return swarm_result(task, data, [None] * task.nodes, hub.round, wall_s, error=message)
    finals = [o.flat if o is not None else None for o in outcomes]
    return swarm_result(task, data, finals, hub.round, wall_s)
