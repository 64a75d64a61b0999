"""summary.json and per_class_accuracy.csv: the numbers `swarm report` computes.

Statistics are taken over node runs: per node (the same node name and mode across
runs), per run (the nodes of one run, per mode) and per mode (everything). Each is
mean, std, min, max and n of the non-null values; std is the sample standard deviation
(ddof=1), 0 for a single value.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from swarm.metrics import write_json_atomic
from swarm.report.collect import NodeRun, natural_key

SUMMARY_SCHEMA_VERSION = 1
SUMMARY_METRICS = ("train_acc", "val_acc", "val_top5", "train_loss", "val_loss", "runtime_s")
CSV_COLUMNS = ("run", "node", "mode", "class", "accuracy", "support")


def stats(values: Iterable[Any]) -> dict[str, float | int | None]:
    """mean, std (ddof=1; 0 for one value), min, max and n of the finite values."""
    finite = np.array([v for v in values if isinstance(v, (int, float))
                       and not isinstance(v, bool) and math.isfinite(v)], dtype=np.float64)
    if not finite.size:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(finite.mean()),
            "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
            "min": float(finite.min()), "max": float(finite.max()), "n": int(finite.size)}


def _metric_stats(runs: list[NodeRun]) -> dict[str, dict]:
    return {metric: stats(run.data.get(metric) for run in runs) for metric in SUMMARY_METRICS}


def group(runs: list[NodeRun], key: Callable[[NodeRun], tuple]) -> dict[tuple, list[NodeRun]]:
    """`runs` grouped by `key`, groups in natural order of their keys."""
    groups: dict[tuple, list[NodeRun]] = {}
    for run in runs:
        groups.setdefault(key(run), []).append(run)
    return dict(sorted(groups.items(), key=lambda item: [natural_key(str(k)) for k in item[0]]))


def _node_run_entry(run: NodeRun) -> dict[str, Any]:
    return {"run": run.run, "node": run.node, "mode": run.mode, "path": str(run.path),
            "seed": run.data.get("seed"), "samples": run.data.get("samples"),
            "epochs": run.epochs, "rounds": len(run.data.get("rounds") or []),
            **{metric: run.data.get(metric) for metric in SUMMARY_METRICS}}


def summarise(runs: list[NodeRun], root: Path, min_epochs: int = 0) -> dict[str, Any]:
    """The summary.json content for `runs` found under `root` (and kept by --min-epochs)."""
    per_node = [{"node": node, "mode": mode, "runs": [r.run for r in members],
                 "n": len(members), **_metric_stats(members)}
                for (node, mode), members in group(runs, lambda r: (r.node, r.mode)).items()]
    per_run = [{"run": name, "mode": mode, "nodes": [r.node for r in members],
                "n": len(members), **_metric_stats(members)}
               for (name, mode), members in group(runs, lambda r: (r.run, r.mode)).items()]
    per_mode = [{"mode": mode, "n": len(members), **_metric_stats(members)}
                for (mode,), members in group(runs, lambda r: (r.mode,)).items()]
    return {"schema_version": SUMMARY_SCHEMA_VERSION, "results_root": str(root),
            "min_epochs": min_epochs,
            "std": "sample standard deviation (ddof=1); 0 for a single value",
            "node_runs": [_node_run_entry(run) for run in runs],
            "per_node": per_node, "per_run": per_run, "per_mode": per_mode}


def write_summary(runs: list[NodeRun], root: Path, out_dir: Path, min_epochs: int = 0) -> Path:
    """Writes out_dir/summary.json."""
    return write_json_atomic(out_dir / "summary.json", summarise(runs, root, min_epochs))


def write_per_class_csv(runs: list[NodeRun], out_dir: Path) -> Path:
    """Writes out_dir/per_class_accuracy.csv: one row per node run and class (long format,
    so any number of classes fits); empty accuracy for a class with no validation samples."""
    path = out_dir / "per_class_accuracy.csv"
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for run in runs:
            support = run.data.get("per_class_support") or {}
            for name, acc in (run.data.get("per_class_accuracy") or {}).items():
                writer.writerow([run.run, run.node, run.mode, name,
                                 "" if acc is None else f"{acc:.6g}", support.get(name, "")])
    return path
