"""What every example training program shares: its settings, its data split, its metrics.

A training program (`examples/<name>/train.py`) is one swarm node's ML sidecar, or with
`--local` (or LOCAL=1) the same code trained alone as a baseline. It reads everything
from the environment (NODE_INDEX, NUM_NODES, PARTITION, ALPHA, SEED, DATA_DIR or
DATA_SOURCE + DATA_SHA256, MODEL_DIR, MAX_EPOCHS, BATCH_SIZE, LEARNING_RATE, MIN_PEERS,
SYNC_FREQUENCY, MERGE_METHOD, NODE_WEIGHTAGE, TRAIN_SAMPLES, TEST_SAMPLES, and ATTACK,
POISON_RATIO, ATTACK_<OPTION> to test defences; the table is in examples/README.md), so
run-sl's `--ml-e KEY=VALUE`, a compose file's `environment:` and a shell all configure it
alike. `--attack` and `--poison-ratio` set the same as ATTACK and POISON_RATIO.

The programs import this module by putting this directory on sys.path, so that they run
the same from a checkout, a container image or a copied examples folder.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from swarm.attacks import AttackSpec, AttackSpecError, attack_spec
from swarm.data import PARTITION_SCHEMES, load_dataset, node_seed, partition
from swarm.metrics import MetricsRecorder, evaluate

log = logging.getLogger("example")


@dataclass(frozen=True)
class Settings:
    """One training run's settings: the example's defaults, overridden by the environment."""

    node_index: int
    num_nodes: int
    partition: str
    alpha: float
    seed: int
    max_epochs: int
    batch_size: int
    learning_rate: float
    min_peers: int
    sync_frequency: int
    merge_method: str
    node_weightage: int
    train_samples: int | None
    test_samples: int | None
    model_dir: Path
    data_source: str | None
    data_sha256: str | None
    local: bool
    attack: str = "none"
    poison_ratio: float | None = None  # None: not given (an error with an attack)
    attack_options: dict[str, str] = field(default_factory=dict)  # attack_<option> -> value

    @property
    def mode(self) -> str:
        return "local" if self.local else "swarm"

    @property
    def node(self) -> str:
        """The node's name in metrics.json: NODE_NAME, else node-<NODE_INDEX>."""
        return _env("NODE_NAME", None) or f"node-{self.node_index}"

    @property
    def node_seed(self) -> int:
        """The seed of this node's own randomness (shuffles, augmentation)."""
        return node_seed(self.seed, self.node_index)

    @property
    def attack_spec(self) -> AttackSpec:
        return attack_spec({"attack": self.attack, "poison_ratio": self.poison_ratio,
                            **self.attack_options})

    @property
    def malicious(self) -> bool:
        """Whether this node attacks: POISON_RATIO of the nodes do, chosen by SEED."""
        return self.node_index in self.attack_spec.malicious(self.num_nodes, self.seed)

    def swarm_params(self, **extra: Any) -> dict[str, Any]:
        """SwarmCallback parameters (the established camelCase names)."""
        return {"syncFrequency": self.sync_frequency, "minPeers": self.min_peers,
                "mergeMethod": self.merge_method, "nodeWeightage": self.node_weightage,
                "totalEpochs": self.max_epochs, "checkinModelOnTrainEnd": "snapshot", **extra}

    def as_config(self) -> dict[str, Any]:
        """The settings as metrics.json records them."""
        config = asdict(self)
        config["model_dir"] = str(self.model_dir)
        config["malicious"] = self.malicious
        return config


def _env(name: str, default: str | None) -> str | None:
    value = os.environ.get(name, "").strip()
    return value or default


def _env_int(name: str, default: int | None) -> int | None:
    value = _env(name, None)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a whole number") from None


def _env_float(name: str, default: float | None) -> float | None:
    value = _env(name, None)
    try:
        return default if value is None else float(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number") from None


def settings(description: str, *, max_epochs: int, batch_size: int, learning_rate: float,
             sync_frequency: int, train_samples: int | None = None,
             argv: list[str] | None = None) -> Settings:
    """Parses `--local` and reads the environment (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=description,
        epilog="Configured by environment variables; see this example's README.md.")
    parser.add_argument("--local", action="store_true",
                        help="train alone, without the swarm (the local baseline); also LOCAL=1")
    parser.add_argument("--attack", help="attack to test defences with: labelflip, backdoor, "
                        "signflip or gaussian (also ATTACK; options as ATTACK_<OPTION>=...)")
    parser.add_argument("--poison-ratio", type=float,
                        help="share of the nodes that attack, chosen by SEED (also POISON_RATIO)")
    args = parser.parse_args(argv)
    scheme = _env("PARTITION", "iid")
    if scheme not in PARTITION_SCHEMES:
        raise SystemExit(f"PARTITION={scheme!r} is not one of {', '.join(PARTITION_SCHEMES)}")
    result = Settings(
        node_index=_env_int("NODE_INDEX", 0), num_nodes=_env_int("NUM_NODES", 1),
        partition=scheme, alpha=_env_float("ALPHA", 0.5), seed=_env_int("SEED", 0),
        max_epochs=_env_int("MAX_EPOCHS", max_epochs),
        batch_size=_env_int("BATCH_SIZE", batch_size),
        learning_rate=_env_float("LEARNING_RATE", learning_rate),
        min_peers=_env_int("MIN_PEERS", 2),
        sync_frequency=_env_int("SYNC_FREQUENCY", sync_frequency),
        merge_method=_env("MERGE_METHOD", "mean"),
        node_weightage=_env_int("NODE_WEIGHTAGE", 1),
        train_samples=_env_int("TRAIN_SAMPLES", train_samples), test_samples=_env_int("TEST_SAMPLES", None),
        model_dir=Path(_env("MODEL_DIR", "./model")),
        data_source=_env("DATA_SOURCE", None) or _env("DATA_DIR", None),
        data_sha256=_env("DATA_SHA256", None),
        local=args.local or _env("LOCAL", "0") == "1",
        attack=args.attack or _env("ATTACK", "none"),
        poison_ratio=(args.poison_ratio if args.poison_ratio is not None
                      else _env_float("POISON_RATIO", None)),
        attack_options={key.lower(): value for key, value in os.environ.items()
                        if key.startswith("ATTACK_") and value.strip()})
    try:
        spec = result.attack_spec
    except AttackSpecError as error:
        name = error.parameter.upper()
        flag = {"ATTACK": " (--attack)", "POISON_RATIO": " (--poison-ratio)"}.get(name, "")
        raise SystemExit(f"{name}{flag}: {str(error).split(': ', 1)[1]}") from None
    if not 0 <= result.node_index < result.num_nodes:
        raise SystemExit(f"NODE_INDEX={result.node_index} must be in 0..{result.num_nodes - 1} "
                         f"(NUM_NODES={result.num_nodes})")
    logging.basicConfig(level=logging.INFO,
                        format=f"%(asctime)s {result.node} %(levelname)s: %(message)s")
    if result.malicious:
        log.warning("This node attacks: %s (%s), one of %d malicious nodes of %d", spec.kind,
                    ", ".join(f"{k}={v}" for k, v in spec.options.items() if v is not None)
                    or "defaults", len(spec.malicious(result.num_nodes, result.seed)),
                    result.num_nodes)
    return result


def attach_attack(config: Settings, callback: Any) -> None:
    """On a malicious node with an update attack, rewrite what the callback sends."""
    transform = config.attack_spec.update_transform(config.node_seed) if config.malicious else None
    if transform is not None:
        callback.add_update_transform(transform)


@dataclass
class NodeData:
    """This node's training share and the (shared) test set; classes name the labels."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]


def _subset(size: int, limit: int | None, seed: int) -> np.ndarray:
    """A seeded random subset of range(size), in order; all of it without a limit."""
    if limit is None or limit >= size:
        return np.arange(size)
    return np.sort(np.random.default_rng(seed).permutation(size)[:limit])


def load_node_data(name: str, config: Settings, **options: Any) -> NodeData:
    """Loads data set `name` (swarm.data) and keeps this node's partition of it.

    The subsets and the split are drawn from the base SEED, so every node computes the
    same global split and the nodes' shares are disjoint.
    """
    if name == "digits":  # bundled with scikit-learn: no file, no checksum
        data = load_dataset(name, **options)
    else:
        data = load_dataset(name, config.data_source, sha256=config.data_sha256, **options)
    train = _subset(len(data.train_y), config.train_samples, config.seed)
    test = _subset(len(data.test_y), config.test_samples, config.seed + 1)
    train_y = data.train_y[train]
    mine = train[partition(train_y, config.num_nodes, config.node_index,
                           scheme=config.partition, alpha=config.alpha, seed=config.seed)]
    if not len(mine):
        raise SystemExit(f"{config.node} got no training samples ({config.partition} split of "
                         f"{len(train)} over {config.num_nodes} nodes): raise ALPHA or TRAIN_SAMPLES")
    log.info("%s: %d of %d training samples (%s split over %d nodes), %d test samples",
             name, len(mine), len(train), config.partition, config.num_nodes, len(test))
    train_x, train_y = data.train_x[mine], data.train_y[mine]
    spec = config.attack_spec
    if spec.poisons_data and config.malicious:  # this node trains on poisoned data
        train_x, train_y = spec.poison_data(train_x, train_y, seed=config.node_seed,
                                            num_classes=len(data.classes))
        log.warning("%s: %d of %d training labels poisoned (%s)", config.node,
                    int((train_y != data.train_y[mine]).sum()), len(train_y), spec.kind)
    return NodeData(train_x, train_y, data.test_x[test], data.test_y[test], list(data.classes))


def recorder(config: Settings, data: NodeData, **model_config: Any) -> MetricsRecorder:
    """The MetricsRecorder writing MODEL_DIR/metrics.json for this run."""
    metrics = MetricsRecorder(config.model_dir, node=config.node, mode=config.mode,
                              seed=config.seed, config={**config.as_config(), **model_config},
                              classes=data.classes)
    metrics.set_samples(train=len(data.train_y), val=len(data.test_y))
    return metrics


def round_listener(metrics: MetricsRecorder, y_true: np.ndarray,
                   scores: Callable[[], np.ndarray]) -> Callable[[int], None]:
    """A SwarmCallback merge listener: records the merged model's validation metrics.

    `scores()` returns the current model's class probabilities on the test set.
    """
    def on_merge(round_no: int) -> None:
        result = evaluate(y_true, scores())
        metrics.log_round(round_no, val_loss=result["loss"], val_acc=result["acc"],
                          val_top5=result["top5"])
        metrics.write()
        log.info("Round %d merged model: val_acc %.4f val_loss %s", round_no, result["acc"],
                 _fmt(result["loss"]))
    return on_merge


def log_epoch(metrics: MetricsRecorder, epoch: int, y_true: np.ndarray, scores: np.ndarray,
              *, train_loss: float, train_acc: float) -> None:
    """Records one epoch: the training averages and the test set's metrics."""
    result = evaluate(y_true, scores)
    metrics.log_epoch(epoch, train_loss=train_loss, train_acc=train_acc,
                      val_loss=result["loss"], val_acc=result["acc"], val_top5=result["top5"])
    metrics.write()
    log.info("Epoch %d: train_loss %.4f train_acc %.4f val_loss %s val_acc %.4f", epoch,
             train_loss, train_acc, _fmt(result["loss"]), result["acc"])


def finish(metrics: MetricsRecorder, y_true: np.ndarray, scores: np.ndarray,
           weights: Iterable[np.ndarray]) -> None:
    """Writes the final evaluation, and logs the final weights' digest: swarm nodes that
    loaded the same final model print the same one."""
    path = metrics.finish(y_true=y_true, y_score_or_pred=scores)
    log.info("Final model (%s): val_acc %.4f; metrics in %s", metrics.mode,
             metrics.final["val_acc"], path)
    log.info("Final weights SHA-256: %s", weights_digest(weights))


def weights_digest(weights: Iterable[np.ndarray]) -> str:
    """SHA-256 over the arrays' shapes, dtypes and bytes, in order."""
    digest = hashlib.sha256()
    for array in weights:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float64 (probabilities for swarm.metrics.evaluate)."""
    shifted = np.asarray(logits, np.float64)
    shifted = shifted - shifted.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
