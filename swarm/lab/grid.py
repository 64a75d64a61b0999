"""Experiment files -> the grid of tasks, each named by the signature of its parameters.

An experiment file (YAML)::

    defaults:                      # optional: merged under every experiment of this file
      task: swarm.lab.tasks:run_task
      params: {nodes: 4, rounds: 10}
    experiments:
      - name: poisoning            # letters, digits, . _ - (it names an output folder)
        task: swarm.lab.tasks:run_task   # optional, "module:function"
        params:
          seed: [0, 1, 2]          # a list is an axis of the grid: lists multiply
          poison_ratio: [0.0, 0.25]
          merge: [mean, trimmedmean]
          hidden: [[64, 32]]       # a list as ONE value: wrap it in a list
          nodes: 4                 # a scalar (or a mapping) is the same for every task

A task is (task function, backend, parameters). Its signature is the sha256 of the
canonical JSON of those three: keys sorted, integral floats written as integers (1.0 and 1
are one value), other floats in their shortest round-trip form. The experiment's name is
not part of it, so a task listed by several experiments, in one file or several, runs once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_TASK = "swarm.lab.tasks:run_task"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
TASK_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
FILE_KEYS = {"defaults", "experiments"}
EXPERIMENT_KEYS = {"name", "task", "params"}
DEFAULTS_KEYS = {"task", "params"}


class GridError(ValueError):
    """An experiment file that cannot be expanded; the message names the file and key."""


class _Loader(yaml.SafeLoader):
    """safe_load, but `1e-3` is a float (YAML 1.1, and so PyYAML, reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                   |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                   |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                   |[-+]?\.(?:inf|Inf|INF)
                   |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


@dataclass(frozen=True)
class Experiment:
    """One experiment of one file: its name and the tasks its grid expands to.

    Values keep the type they were written with (0.0 stays a float for the task); only
    the signature normalises them."""

    name: str
    source: str  # the file it came from
    task: str
    axes: dict[str, list]  # parameter -> its values (a constant is a one-value axis)


@dataclass(frozen=True)
class Task:
    """One cell of the grid: what runs, on which backend, with which parameters."""

    task: str
    backend: str
    params: dict[str, Any]
    signature: str = field(default="")

    @staticmethod
    def make(task: str, backend: str, params: dict[str, Any]) -> "Task":
        return Task(task, backend, params, signature(task, backend, params))


def canonical(value: Any, where: str = "params") -> Any:
    """The value with one spelling per meaning: integral floats as ints, dict keys strings.

    Raises GridError for what JSON cannot hold (NaN, infinities, non-string keys, objects).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise GridError(f"{where}: {value!r} is not a finite number")
        return int(value) if value.is_integer() and abs(value) < 2 ** 53 else value
    if isinstance(value, (list, tuple)):
        return [canonical(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise GridError(f"{where}: key {key!r} is not a string")
            out[key] = canonical(item, f"{where}.{key}")
        return out
    raise GridError(f"{where}: {type(value).__name__} value {value!r} is not allowed "
                    "(use strings, numbers, booleans, null, lists and mappings)")


def canonical_json(value: Any) -> str:
    return json.dumps(canonical(value), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False, allow_nan=False)


def signature(task: str, backend: str, params: dict[str, Any]) -> str:
    """sha256 hex of the canonical (task, backend, params); the seed is one of the params."""
    text = canonical_json({"task": task, "backend": backend, "params": params})
    return hashlib.sha256(text.encode()).hexdigest()


def _mapping(value: Any, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GridError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _task_ref(value: Any, where: str) -> str:
    if not isinstance(value, str) or not TASK_REF.match(value):
        raise GridError(f"{where}: {value!r} is not a task reference "
                        "'package.module:function'")
    return value


def _axes(params: dict, where: str) -> dict[str, list]:
    axes = {}
    for key, value in params.items():
        if not isinstance(key, str):
            raise GridError(f"{where}: parameter name {key!r} is not a string")
        here = f"{where}.{key}"
        if isinstance(value, list):
            if not value:
                raise GridError(f"{here}: an empty list makes an empty grid")
            seen = set()
            for i, item in enumerate(value):
                text = canonical_json(canonical(item, f"{here}[{i}]"))
                if text in seen:
                    raise GridError(f"{here}: value {item!r} is listed twice")
                seen.add(text)
            axes[key] = list(value)
        else:
            canonical(value, here)  # refuses what JSON cannot hold
            axes[key] = [value]
    return axes


def load_file(path: str | Path) -> list[Experiment]:
    """The experiments of one YAML file; GridError names the file and key on bad input."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise GridError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        doc = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as error:
        raise GridError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(doc, dict):
        raise GridError(f"{path}: expected a mapping with key 'experiments'")
    unknown = set(doc) - FILE_KEYS
    if unknown:
        raise GridError(f"{path}: unknown key(s) {', '.join(map(str, sorted(unknown, key=str)))}"
                        f" (expected {', '.join(sorted(FILE_KEYS))})")
    defaults = _mapping(doc.get("defaults"), f"{path}: defaults")
    unknown = set(defaults) - DEFAULTS_KEYS
    if unknown:
        raise GridError(f"{path}: defaults: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
                        f" (expected {', '.join(sorted(DEFAULTS_KEYS))})")
    default_task = _task_ref(defaults.get("task", DEFAULT_TASK), f"{path}: defaults.task")
    default_params = _mapping(defaults.get("params"), f"{path}: defaults.params")
    entries = doc.get("experiments")
    if not isinstance(entries, list) or not entries:
        raise GridError(f"{path}: 'experiments' must be a non-empty list")
    experiments = []
    for index, entry in enumerate(entries):
        where = f"{path}: experiments[{index}]"
        entry = _mapping(entry, where)
        unknown = set(entry) - EXPERIMENT_KEYS
        if unknown:
            raise GridError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}"
                            f" (expected {', '.join(sorted(EXPERIMENT_KEYS))})")
        name = entry.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            raise GridError(f"{where}.name: {name!r} is not a name (letters, digits, . _ -)")
        where = f"{path}: experiment {name!r}"
        task = _task_ref(entry.get("task", default_task), f"{where}.task")
        params = {**default_params, **_mapping(entry.get("params"), f"{where}.params")}
        experiments.append(Experiment(name, str(path), task, _axes(params, f"{where}.params")))
    return experiments


def load(paths: Sequence[str | Path]) -> list[Experiment]:
    """The experiments of several files; a name used twice is an error naming both places."""
    experiments: list[Experiment] = []
    where: dict[str, str] = {}
    for path in paths:
        for experiment in load_file(path):
            if experiment.name in where:
                raise GridError(f"{experiment.source}: experiment {experiment.name!r} is "
                                f"also defined in {where[experiment.name]}")
            where[experiment.name] = experiment.source
            experiments.append(experiment)
    return experiments


def expand(experiment: Experiment, backend: str) -> list[Task]:
    """The experiment's tasks: the product of its axes, in file order (last axis fastest)."""
    keys = list(experiment.axes)
    return [Task.make(experiment.task, backend, dict(zip(keys, values)))
            for values in itertools.product(*(experiment.axes[key] for key in keys))]


@dataclass(frozen=True)
class Plan:
    """Every distinct task of a set of experiments, and which experiments list each."""

    tasks: list[Task]  # first-seen order, one per signature
    members: dict[str, list[str]]  # experiment name -> signatures, in its grid order


def plan(experiments: Iterable[Experiment], backend: str) -> Plan:
    tasks: dict[str, Task] = {}
    members: dict[str, list[str]] = {}
    for experiment in experiments:
        sigs = []
        for task in expand(experiment, backend):
            tasks.setdefault(task.signature, task)
            sigs.append(task.signature)
        members[experiment.name] = sigs
    return Plan(list(tasks.values()), members)


def sort_key(value: Any) -> tuple:
    """Orders parameter values numerically where they are numbers (0.1 < 0.3 < 1 < 10),
    then text in natural order (node2 < node10); None first."""
    if value is None:
        return (0,)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (2, value)
    if isinstance(value, str):
        try:
            return (2, float(value))
        except ValueError:
            parts = re.split(r"(\d+)", value)
            return (3, tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts))
    return (4, canonical_json(value))
