"""One lab task: N nodes learn one model together, measured on held-out test data.

``run_task(params, backend="inproc"|"process", workdir=DIR)`` is what ``swarm sweep``
calls for each cell of a grid (its default ``task: swarm.lab.tasks:run_task``). Both
backends run the SAME learning code: each node is ``train_node`` (a NumPy MLP driven by
the real ``SwarmCallbackCore``, syncing every ``sync_every`` batches, merging with the
session's ``swarm.merging`` method); only what carries a sync differs:

- ``inproc``: the N nodes are threads of this process and ``swarm.lab.inproc`` seals
  each round when every node has checked in or finished, then merges as an SL node does
  (no network, no ledger): a small digits task takes a fraction of a second;
- ``process``: a real swarm (``swarm.lab.launch.LocalSwarm``): certificates, a sentinel
  SN on its embedded ledger, N SL nodes over mutual TLS, each running this task's node as
  its ML sidecar (``python -m swarm.lab.node``).

For the same parameters and seed both give bit-identical final weights (tests/lab).

Parameters (a flat dict; every key optional, unknown keys refused):

  dataset        digits | mnist | cifar10 (default digits: scikit-learn's, 1397 train /
                 400 test). mnist/cifar10 read ``data_dir`` (the standard files) or, when
                 it is empty, a synthetic stand-in of ``synth_train``/``synth_test`` images
  data_dir       where mnist.npz / cifar-10-python.tar.gz are ("" : synthetic)
  synth_train, synth_test   synthetic sizes (default 2000, 500)
  model          mlp (the only one: framework-free, for speed)
  width, depth   hidden layers: ``depth`` layers of ``width`` units (default 32, 1)
  hidden         instead of width/depth: the hidden widths as a list, e.g. [64, 32]
  nodes          N (default 4)
  partition      iid | label | dirichlet (swarm.data.partition; default iid)
  alpha          the Dirichlet concentration (default 0.5; only for dirichlet)
  merge          a swarm.merging method (default mean)
  merge_params   its parameters, a mapping (default {}), e.g. {trim_ratio: 0.25}
  optimizer      sgd | adam (default sgd)
  lr             learning rate (default 0.1 for sgd, 0.001 for adam)
  batch_size     (default 16)
  epochs         local epochs per node (default 10)
  sync_every     batches between syncs: the callback's syncFrequency (default 8)
  min_peers      (default 0: all N nodes). ``inproc`` always runs every round with all
                 N nodes; a real swarm with min_peers < N may seal rounds without some
  checkin        what a node that has finished contributes while others still train:
                 snapshot | active | inactive (the callback's checkinModelOnTrainEnd)
  seed           everything random: initial weights, splits, shuffles, attackers (0)
  attack         none | labelflip | backdoor | signflip | gaussian (swarm.attacks)
  poison_ratio   the share of malicious nodes (needed with an attack)
  attack_<opt>   the attack's options, e.g. attack_scale=10 (see swarm.attacks)
  local_baseline also train every node alone on its own data and report it (false)

Result keys (a flat, JSON-safe dict; lists hold one value per node):

  accuracy, loss         of the final swarm model on the test set (NaN when diverged)
  diverged               true when training or a merge produced NaN/Inf
  divergence             where and how it diverged ("" otherwise)
  rounds                 sync rounds merged, the start round included
  wall_s                 seconds for the swarm part (not the local baselines)
  weights_sha256         SHA-256 of the final model's flat little-endian wire vector
  nodes_agree            every node ended with those same weights
  model                  e.g. mlp-64-32-10
  train_samples, node_samples (list), malicious (list of node indices)
  local_accuracy, local_loss (lists), local_accuracy_mean/min/max,
  local_wall_s           only when local_baseline is true
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import numbers
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swarm.callback.core import SwarmCallbackCore, save_npz
from swarm.callback.params import parse_params
from swarm.data import PARTITION_SCHEMES, load_dataset, node_seed, partition_all
from swarm.data.synth import WRITERS
from swarm.files import atomic_target
from swarm.merging import MERGE_METHODS
from swarm.session import CHECKIN_MODES
from swarm.tensors import Layout, WeightsError

from .mlp import MLP, OPTIMIZERS

BACKENDS = ("inproc", "process")
DATASETS = ("digits", "mnist", "cifar10")
DATA_FILES = {"mnist": "mnist.npz", "cifar10": "cifar-10-python.tar.gz"}
ATTACK_PREFIX = "attack_"
DEFAULT_LR = {"sgd": 0.1, "adam": 0.001}

DEFAULTS: dict[str, Any] = {
    "dataset": "digits", "data_dir": "", "synth_train": 2000, "synth_test": 500,
    "model": "mlp", "width": 32, "depth": 1, "hidden": None,
    "nodes": 4, "partition": "iid", "alpha": 0.5,
    "merge": "mean", "merge_params": {},
    "optimizer": "sgd", "lr": None, "batch_size": 16, "epochs": 10, "sync_every": 8,
    "min_peers": 0, "checkin": "snapshot", "seed": 0,
    "attack": "none", "poison_ratio": None, "local_baseline": False,
}


class TaskError(ValueError):
    """A task parameter that cannot be used; the message names it and what is allowed."""


# ---- parameters -----------------------------------------------------------------------

@dataclass(frozen=True)
class Task:
    """A task's parameters, validated, with defaults filled in."""

    dataset: str
    data_dir: str
    synth_train: int
    synth_test: int
    hidden: tuple[int, ...]
    nodes: int
    partition: str
    alpha: float
    merge: str
    merge_params: dict
    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    sync_every: int
    min_peers: int
    checkin: str
    seed: int
    local_baseline: bool
    attack: dict = field(default_factory=dict)  # attack, poison_ratio, attack_<option>

    def to_json(self) -> str:
        """The task as the process backend's node program reads it back."""
        return json.dumps(task_params(self), sort_keys=True)


def task_params(task: Task) -> dict[str, Any]:
    """A Task back as flat parameters (parse_task(task_params(t)) == t)."""
    return {"dataset": task.dataset, "data_dir": task.data_dir,
            "synth_train": task.synth_train, "synth_test": task.synth_test,
            "hidden": list(task.hidden), "nodes": task.nodes, "partition": task.partition,
            "alpha": task.alpha, "merge": task.merge, "merge_params": task.merge_params,
            "optimizer": task.optimizer, "lr": task.lr, "batch_size": task.batch_size,
            "epochs": task.epochs, "sync_every": task.sync_every, "min_peers": task.min_peers,
            "checkin": task.checkin, "seed": task.seed, "local_baseline": task.local_baseline,
            **task.attack}


def _int(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value != int(value) \
            or int(value) < low:
        raise TaskError(f"task parameter {key}: must be a whole number >= {low}, not {value!r}")
    return int(value)


def _float(key: str, value: Any, positive: bool = True) -> float:
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) \
        and math.isfinite(float(value)) and (float(value) > 0 or not positive)
    if not ok:
        raise TaskError(f"task parameter {key}: must be a finite number"
                        f"{' > 0' if positive else ''}, not {value!r}")
    return float(value)


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    text = str(value).strip().lower() if isinstance(value, str) else value
    if text not in allowed:
        raise TaskError(f"task parameter {key}: {value!r} is not one of {', '.join(allowed)}")
    return text


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise TaskError(f"task parameter {key}: must be true or false, not {value!r}")


def parse_task(params: Mapping[str, Any]) -> Task:
    """Validates flat task parameters (see the module docstring); TaskError names the bad one."""
    if not isinstance(params, Mapping):
        raise TaskError(f"task parameters must be a mapping, not {type(params).__name__}")
    unknown = sorted(k for k in params if k not in DEFAULTS and not k.startswith(ATTACK_PREFIX))
    if unknown:
        raise TaskError(f"unknown task parameter {unknown[0]!r}; known: "
                        f"{', '.join(sorted(DEFAULTS))}, and attack_<option>")
    p = {**DEFAULTS, **params}
    if p["model"] != "mlp":
        raise TaskError(f"task parameter model: {p['model']!r} is not one of mlp")
    if p["hidden"] is None:
        hidden = (_int("width", p["width"], 1),) * _int("depth", p["depth"], 0)
    else:
        if isinstance(p["hidden"], (str, bytes)) or not hasattr(p["hidden"], "__iter__"):
            raise TaskError(f"task parameter hidden: a list of layer widths, not {p['hidden']!r}")
        hidden = tuple(_int("hidden", h, 1) for h in p["hidden"])
    optimizer = _choice("optimizer", p["optimizer"], OPTIMIZERS)
    lr = DEFAULT_LR[optimizer] if p["lr"] is None else _float("lr", p["lr"])
    merge_params = p["merge_params"]
    if isinstance(merge_params, str):  # a CSV cell or an environment variable
        try:
            merge_params = json.loads(merge_params or "{}")
        except ValueError:
            raise TaskError(f"task parameter merge_params: {merge_params!r} is not a JSON "
                            "mapping") from None
    if not isinstance(merge_params, Mapping):
        raise TaskError(f"task parameter merge_params: must be a mapping, not {merge_params!r}")
    nodes = _int("nodes", p["nodes"], 1)
    min_peers = _int("min_peers", p["min_peers"], 0)
    if min_peers > nodes:
        raise TaskError(f"task parameter min_peers: {min_peers} is more than nodes={nodes}")
    attack = {k: v for k, v in p.items() if k in ("attack", "poison_ratio")
              or k.startswith(ATTACK_PREFIX)}
    task = Task(
        dataset=_choice("dataset", p["dataset"], DATASETS), data_dir=str(p["data_dir"] or ""),
        synth_train=_int("synth_train", p["synth_train"], 10),
        synth_test=_int("synth_test", p["synth_test"], 10), hidden=hidden, nodes=nodes,
        partition=_choice("partition", p["partition"], PARTITION_SCHEMES),
        alpha=_float("alpha", p["alpha"]), merge=_choice("merge", p["merge"], MERGE_METHODS),
        merge_params=dict(merge_params), optimizer=optimizer, lr=lr,
        batch_size=_int("batch_size", p["batch_size"], 1), epochs=_int("epochs", p["epochs"], 1),
        sync_every=_int("sync_every", p["sync_every"], 1), min_peers=min_peers or nodes,
        checkin=_choice("checkin", p["checkin"], CHECKIN_MODES),
        seed=_int("seed", p["seed"], 0), local_baseline=_bool("local_baseline", p["local_baseline"]),
        attack=attack)
    try:
        callback_params(task)  # the merge method and its parameters, checked as the callback does
    except ValueError as error:
        raise TaskError(f"task parameters merge/merge_params: {error}") from None
    attack_of(task)
    return task


def attack_of(task: Task):
    """The task's swarm.attacks AttackSpec, or None when it has no attack."""
    if str(task.attack.get("attack", "none")).strip().lower() in ("none", "") \
            and not any(k.startswith(ATTACK_PREFIX) for k in task.attack):
        return None
    try:
        from swarm.attacks import attack_spec  # the attacks package, when present
    except ImportError:
        raise TaskError(f"task parameter attack: {task.attack.get('attack')!r} needs "
                        "swarm.attacks, which this installation lacks") from None
    try:
        spec = attack_spec(task.attack)
    except ValueError as error:
        raise TaskError(f"task parameter {error}") from None
    return spec if spec.active else None


def callback_params(task: Task, logger: logging.Logger | None = None):
    """The SwarmCallback parameters every node of the task uses."""
    return parse_params(sync_frequency=task.sync_every, min_peers=task.min_peers,
                        merge_method=task.merge, merge_params=dict(task.merge_params),
                        checkin_model_on_train_end=task.checkin, total_epochs=task.epochs,
                        logger=logger or quiet_logger())


def quiet_logger() -> logging.Logger:
    """The callback's logger in lab runs: warnings only (hundreds of tasks would flood)."""
    log = logging.getLogger("swarm.lab.node")
    if log.level == logging.NOTSET:
        log.setLevel(logging.WARNING)
    return log


# ---- data -----------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeData:
    """What one node trains on (after any data poisoning)."""

    index: int
    x: np.ndarray
    y: np.ndarray
    malicious: bool


@dataclass(frozen=True)
class TaskData:
    inputs: int
    classes: int
    test_x: np.ndarray
    test_y: np.ndarray
    nodes: tuple[NodeData, ...]


@functools.lru_cache(maxsize=8)
def _dataset(name: str, data_dir: str, synth_train: int, synth_test: int):
    """(train_x, train_y, test_x, test_y, classes) as float32 rows; cached per process."""
    if name == "digits":
        return _digits()
    else:
        if data_dir:
            source = Path(data_dir)
        else:  # a synthetic stand-in, written once per size into a shared cache
            cache = Path(tempfile.gettempdir()) / "swarm-lab-data" / f"{name}-{synth_train}-{synth_test}"
            source = cache / DATA_FILES[name]
            if not source.exists():
                cache.mkdir(parents=True, exist_ok=True)
                with tempfile.TemporaryDirectory(dir=cache) as tmp:
                    written = WRITERS[name](Path(tmp), train=synth_train, test=synth_test)
                    os.replace(written, source)
        data = load_dataset(name, source)

    def rows(x: np.ndarray) -> np.ndarray:
        x = x.reshape(len(x), -1)
        return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32)

    return rows(data.train_x), data.train_y, rows(data.test_x), data.test_y, data.num_classes


def _digits():
    """The digits as _dataset returns them, kept as an .npz beside the synthetic sets:
    a process-backend sidecar then starts without importing scikit-learn."""
    cache = Path(tempfile.gettempdir()) / "swarm-lab-data" / "digits.npz"
    keys = ("train_x", "train_y", "test_x", "test_y")
    try:
        with np.load(cache) as stored:
            return (*(stored[k] for k in keys), 10)
    except (OSError, KeyError, ValueError):
        pass
    data = load_dataset("digits")
    cache.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(cache, mode=0o644) as tmp:
        np.savez(tmp, **{k: getattr(data, k) for k in keys})
    return data.train_x, data.train_y, data.test_x, data.test_y, data.num_classes


def task_data(task: Task) -> TaskData:
    """The test set and every node's training share (poisoned where malicious)."""
    train_x, train_y, test_x, test_y, classes = _dataset(
        task.dataset, task.data_dir, task.synth_train, task.synth_test)
    try:
        parts = partition_all(train_y, task.nodes, scheme=task.partition, alpha=task.alpha,
                              seed=task.seed)
    except ValueError as error:
        raise TaskError(f"task parameter partition: {error}") from None
    spec = attack_of(task)
    malicious = spec.malicious(task.nodes, task.seed) if spec is not None else set()
    nodes = []
    for i, part in enumerate(parts):
        x, y = train_x[part], train_y[part]
        if i in malicious and spec.poisons_data:
            x, y = spec.poison_data(x, y, seed=node_seed(task.seed, i), num_classes=classes)
        nodes.append(NodeData(i, x, y, i in malicious))
    return TaskData(train_x.shape[1], classes, test_x, test_y, tuple(nodes))


# ---- one node ---------------------------------------------------------------------------

def build_model(task: Task, data: TaskData) -> MLP:
    return MLP(data.inputs, data.classes, list(task.hidden), task.seed, task.optimizer, task.lr)


def batches(task: Task, node: NodeData):
    """The node's minibatches, epoch by epoch: (epoch, x, y), shuffled by its own seed."""
    rng = np.random.default_rng(node_seed(task.seed, node.index))
    n = len(node.y)
    for epoch in range(task.epochs):
        order = rng.permutation(n)
        for start in range(0, n, task.batch_size):
            idx = order[start:start + task.batch_size]
            yield epoch, node.x[idx], node.y[idx]


@dataclass
class NodeOutcome:
    """How one node's training ended: its final flat weights (wire dtype)."""

    index: int
    flat: np.ndarray | None
    rounds: int
    error: str = ""


def train_node(task: Task, data: TaskData, index: int, channel=None,
               model_dir: Path | None = None) -> NodeOutcome:
    """Node `index` of the task through a real SwarmCallbackCore on `channel` (None: the
    SL node at $SWARM_SL_ADDRESS). Raises WeightsError if training diverges."""
    node = data.nodes[index]
    model = build_model(task, data)

    def save(weights, directory: Path) -> Path:
        return save_npz(weights, model_dir or directory, f"node-{index}")

    core = SwarmCallbackCore(model.get_weights, model.set_weights, callback_params(task),
                             "numpy", channel=channel, save_final=save)
    spec = attack_of(task)
    if spec is not None and node.malicious and spec.poisons_updates:
        core.add_update_transform(spec.update_transform(node_seed(task.seed, index)))
    core.on_train_begin()
    epoch_seen = 0
    for epoch, x, y in batches(task, node):
        if epoch != epoch_seen:
            core.on_epoch_end(epoch_seen)
            epoch_seen = epoch
        if core.swarm_done:
            break
        model.step(x, y)
        core.on_batch_end()
    core.on_epoch_end(epoch_seen)
    core.on_train_end()
    layout = Layout.from_weights(model.get_weights())
    return NodeOutcome(index, layout.flatten(model.get_weights()), core.rounds_done)


def train_alone(task: Task, data: TaskData, index: int) -> tuple[float, float]:
    """Node `index` alone on its own share, no swarm: (test accuracy, test loss)."""
    model = build_model(task, data)
    for _, x, y in batches(task, data.nodes[index]):
        model.step(x, y)
    return model.evaluate(data.test_x, data.test_y)


# ---- results ----------------------------------------------------------------------------

def evaluate_flat(task: Task, data: TaskData, flat: np.ndarray) -> tuple[float, float]:
    model = build_model(task, data)
    layout = Layout.from_weights(model.get_weights())
    model.set_weights(layout.unflatten(flat))
    return model.evaluate(data.test_x, data.test_y)


def weights_sha256(flat: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(flat).astype(flat.dtype.newbyteorder("<")).tobytes()).hexdigest()


def swarm_result(task: Task, data: TaskData, finals: list[np.ndarray | None], rounds: int,
                 wall_s: float, error: str = "") -> dict[str, Any]:
    """The result row of a task from every node's final flat weights (None: none)."""
    digests = [weights_sha256(f) if f is not None else "" for f in finals]
    final = finals[0] if finals and finals[0] is not None else None
    diverged = bool(error) or final is None or not bool(np.all(np.isfinite(final)))
    accuracy = loss = float("nan")
    if not diverged:
        accuracy, loss = evaluate_flat(task, data, final)
        diverged = not (math.isfinite(accuracy) and math.isfinite(loss))
        if diverged:
            error = "the final model gives NaN/Inf on the test set"
            accuracy = loss = float("nan")
    elif not error:
        error = "training diverged (NaN/Inf weights)"
    return {
        "accuracy": accuracy, "loss": loss, "diverged": diverged, "divergence": error,
        "rounds": int(rounds), "wall_s": round(wall_s, 4),
        "weights_sha256": digests[0] if not diverged else "",
        "nodes_agree": bool(digests) and len(set(digests)) == 1 and digests[0] != "",
        "model": build_model(task, data).describe,
        "train_samples": int(sum(len(n.y) for n in data.nodes)),
        "node_samples": [int(len(n.y)) for n in data.nodes],
        "malicious": [n.index for n in data.nodes if n.malicious],
    }


def local_baselines(task: Task, data: TaskData) -> dict[str, Any]:
    started = time.perf_counter()
    scores = [train_alone(task, data, i) for i in range(task.nodes)]
    accuracies = [a for a, _ in scores]
    finite = [a for a in accuracies if math.isfinite(a)] or [float("nan")]
    return {"local_accuracy": accuracies, "local_loss": [loss for _, loss in scores],
            "local_accuracy_mean": float(np.mean(finite)), "local_accuracy_min": min(finite),
            "local_accuracy_max": max(finite),
            "local_wall_s": round(time.perf_counter() - started, 4)}




def one_blas_thread():
    """Single-threaded BLAS for the run: small matrices gain nothing from threads, and
    one thread makes every backend sum in the same order (bit-identical weights)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # scikit-learn brings it; without it, BLAS keeps its own setting
        import contextlib
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def run_task(params: Mapping[str, Any], *, backend: str = "inproc",
             workdir: Path | str | None = None) -> dict[str, Any]:
    """Runs one task (see the module docstring for `params` and the result's keys).

    A run that diverges (NaN/Inf) is a result (accuracy NaN, diverged true), not an
    exception; bad parameters raise TaskError naming the parameter.
    """
    task = parse_task(params)
    if backend not in BACKENDS:
        raise TaskError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="swarm-lab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    data = task_data(task)
    with one_blas_thread():
        if backend == "inproc":
            from .inproc import run_inproc
            result = run_inproc(task, data, workdir)
        else:
            from .launch import run_process
            result = run_process(task, data, workdir)
        if task.local_baseline:
            result.update(local_baselines(task, data))
    return result


def diverged_error(error: BaseException) -> str | None:
    """The message when `error` means training diverged (NaN/Inf weights), else None."""
    return str(error) if isinstance(error, WeightsError) else None
