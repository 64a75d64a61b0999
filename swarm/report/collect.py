"""Finding and reading the metrics.json files below a results root.

A *run* groups the nodes trained together: the directory that holds the node's model
directory (``ROOT/<run>/<node>/metrics.json`` gives run ``<run>``), unless the node's
config names it with a ``"run"`` string. A metrics.json directly in ROOT/<node>/ (or in
ROOT itself) belongs to the run named after ROOT. Files that cannot be read or are not
metrics.json files of this schema are skipped with a one-line warning naming the file.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swarm.metrics import METRICS_FILE, MODES, SCHEMA_VERSION


class ReportError(Exception):
    """Nothing to report on: no metrics.json under the root, or every run filtered out."""


@dataclass(frozen=True)
class NodeRun:
    """One metrics.json: one node's training in one run."""

    path: Path
    run: str
    data: dict[str, Any]

    @property
    def node(self) -> str:
        return self.data["node"]

    @property
    def mode(self) -> str:
        return self.data["mode"]

    @property
    def epochs(self) -> int:
        return len(self.data["history"].get("epoch") or [])

    @property
    def label(self) -> str:
        """How messages and tables name this node run."""
        return f"{self.run}/{self.node} ({self.mode})"


def _check(data: Any) -> str | None:
    """Why `data` is not a usable metrics.json, or None when it is."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if data.get("schema_version") != SCHEMA_VERSION:
        return f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}"
    if not isinstance(data.get("node"), str) or not data["node"]:
        return "no node name"
    if data.get("mode") not in MODES:
        return f"mode {data.get('mode')!r} is not one of {', '.join(MODES)}"
    if not isinstance(data.get("history"), dict):
        return "no history"
    return None


def run_name(path: Path, root: Path, data: dict[str, Any]) -> str:
    """The run a metrics.json belongs to (see the module docstring)."""
    named = (data.get("config") or {}).get("run")
    if isinstance(named, str) and named:
        return named
    grouping = path.parent.parent
    if grouping != root and grouping.is_relative_to(root):
        return grouping.relative_to(root).as_posix()
    return root.resolve().name or str(root)


def collect(root: Path) -> list[NodeRun]:
    """Every readable metrics.json below `root`, in path order; raises ReportError if none."""
    if not root.is_dir():
        raise ReportError(f"results root {root} is not a directory")
    found = sorted(root.rglob(METRICS_FILE))
    runs: list[NodeRun] = []
    for path in found:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            print(f"warning: skipping {path}: {str(error).splitlines()[0]}", file=sys.stderr)
            continue
        problem = _check(data)
        if problem:
            print(f"warning: skipping {path}: {problem}", file=sys.stderr)
            continue
        runs.append(NodeRun(path, run_name(path, root, data), data))
    if not found:
        raise ReportError(f"no {METRICS_FILE} found under {root}")
    if not runs:
        raise ReportError(f"none of the {len(found)} {METRICS_FILE} files under {root} "
                          "could be read")
    return runs


def drop_short(runs: list[NodeRun], min_epochs: int) -> list[NodeRun]:
    """The node runs with at least `min_epochs` epochs of history, naming those dropped."""
    kept = [run for run in runs if run.epochs >= min_epochs]
    for run in runs:
        if run.epochs < min_epochs:
            print(f"dropped {run.path}: {run.epochs} epochs < --min-epochs {min_epochs}",
                  file=sys.stderr)
    if not kept:
        raise ReportError(f"every run has fewer than {min_epochs} epochs (--min-epochs)")
    return kept


def natural_key(text: str) -> list:
    """Sort key that puts node2 before node10."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part)
            for part in re.split(r"(\d+)", text) if part]
