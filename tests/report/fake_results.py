"""Results trees for the report tests: metrics.json files written by MetricsRecorder
with realistic histories (accuracy rising to a node-specific plateau, loss falling) and
final scores whose accuracy is close to the plateau."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from swarm.metrics import MetricsRecorder


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def final_scores(rng: np.random.Generator, labels: np.ndarray, classes: int,
                 accuracy: float) -> np.ndarray:
    """Probabilities whose argmax is the label for about `accuracy` of the samples."""
    logits = rng.normal(0.0, 1.0, (labels.size, classes))
    correct = rng.random(labels.size) < accuracy
    wrong = (labels + rng.integers(1, classes, labels.size)) % classes
    target = np.where(correct, labels, wrong)
    logits[np.arange(labels.size), target] += 4.0
    return softmax(logits)


def write_node(model_dir: Path, *, node: str, mode: str, seed: int, classes: int,
               epochs: int, rounds: int, plateau: float, run: str | None = None,
               val_samples: int = 300) -> Path:
    """One node's metrics.json, as a training program would write it."""
    rng = np.random.default_rng(seed)
    names = [f"class_{i:02d}" if classes > 10 else f"c{i}" for i in range(classes)]
    config = {"epochs": epochs, "lr": 0.01, "batch_size": 32, **({"run": run} if run else {})}
    recorder = MetricsRecorder(model_dir, node=node, mode=mode, seed=seed, config=config,
                               classes=names)
    recorder.set_samples(train=1200, val=val_samples)
    chance = 1.0 / classes
    for epoch in range(1, epochs + 1):
        rise = 1.0 - np.exp(-epoch / 2.5)
        train_acc = min(1.0, chance + (plateau + 0.06 - chance) * rise + rng.normal(0, 0.01))
        val_acc = min(1.0, chance + (plateau - chance) * rise + rng.normal(0, 0.015))
        train_acc, val_acc = max(0.01, train_acc), max(0.01, val_acc)
        recorder.log_epoch(epoch, train_loss=-1.3 * np.log(train_acc), train_acc=train_acc,
                           val_loss=-1.4 * np.log(val_acc) + rng.normal(0, 0.03),
                           val_acc=val_acc, val_top5=min(1.0, val_acc + 0.2))
    for round_no in range(1, rounds + 1):
        acc = chance + (plateau + 0.02 - chance) * (1.0 - np.exp(-round_no / 3.0))
        recorder.log_round(round_no, val_loss=2.5 * (1.1 - acc), val_acc=acc,
                           val_top5=min(1.0, acc + 0.2))
    labels = rng.integers(0, classes, val_samples)
    return recorder.finish(y_true=labels, y_score_or_pred=final_scores(rng, labels, classes, plateau))


def write_tree(root: Path, *, runs: int = 2, nodes: int = 3, classes: int = 10,
               epochs: int = 6, rounds: int = 8, local: bool = True) -> list[Path]:
    """ROOT/run<k>/node<i>/metrics.json for the swarm and ROOT/run<k>/local-node<i>/... for
    the local baselines, with different plateaus per node and mode."""
    paths = []
    for run in range(1, runs + 1):
        for i in range(1, nodes + 1):
            seed = 100 * run + i
            paths.append(write_node(root / f"run{run}" / f"node{i}", node=f"node{i}",
                                    mode="swarm", seed=seed, classes=classes, epochs=epochs,
                                    rounds=rounds, plateau=0.78 + 0.01 * (i % 4)))
            if local:
                paths.append(write_node(root / f"run{run}" / f"local-node{i}", node=f"node{i}",
                                        mode="local", seed=seed + 50, classes=classes,
                                        epochs=epochs, rounds=0, plateau=0.55 + 0.04 * (i % 5)))
    return paths
