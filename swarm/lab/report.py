"""The sweep's tables and plots: results.csv (one row per task, for the whole folder and
for each experiment), and `swarm sweep report`'s summary.md and PNGs.

Rows sort by their parameters, numbers numerically (alpha 0.1 < 0.3 < 1 < 10). Summaries
group the tasks by every parameter that varies except the seed: the mean and standard
deviation over the seeds (over whatever repeats) of each metric. A plot is drawn only for
what the grid varies: accuracy against each numeric parameter that takes several values
(one line per combination of the other varying parameters, error bars over seeds), bars
per group when no numeric parameter varies, and swarm against local when the tasks report
local baselines.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from swarm.files import atomic_write
from swarm.lab.grid import canonical_json, sort_key
from swarm.lab.state import State, TaskRow, TaskState

SEED = "seed"
METRIC = "accuracy"
LOCAL = "local_accuracy_mean"  # derived: the mean of a task's per-node local baselines
HEAD = ["signature", "experiments", "state", "attempts", "task", "backend"]
TAIL = ["elapsed_s", "error_kind", "error"]
PREFERRED = ["accuracy", "loss", LOCAL, "rounds", "wall_s"]
DPI = 110
MAX_SERIES = 12  # more lines than this on one plot: the legend is left out


def flatten(result: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings become dotted keys; lists stay values (written as JSON)."""
    out: dict[str, Any] = {}
    for key, value in result.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def local_mean(result: dict[str, Any]) -> float | None:
    """The mean of the per-node local baselines a task reported, where it reported any: a
    metric whose name has "local" and "acc" in it, a number, a list of numbers, a mapping of
    node -> number, or node -> {"accuracy": number}."""
    for key, value in result.items():
        lowered = key.lower()
        if "local" not in lowered or "acc" not in lowered and not isinstance(value, dict):
            continue
        if (number := _number(value)) is not None:
            return number
        items = value.values() if isinstance(value, dict) else value
        if not isinstance(items, Iterable) or isinstance(items, str):
            continue
        numbers = []
        for item in items:
            if isinstance(item, dict):
                item = item.get("accuracy", item.get("acc"))
            if (number := _number(item)) is not None:
                numbers.append(number)
        if numbers:
            return statistics.fmean(numbers)
    return None


@dataclass
class Table:
    """The rows of results.csv, and which parameters vary across them."""

    params: list[str]
    metrics: list[str]
    rows: list[dict[str, Any]]  # column -> value, parameters under their own names
    varying: list[str] = field(default_factory=list)  # parameters with several values

    @property
    def columns(self) -> list[str]:
        return HEAD + self.params + self.metrics + TAIL


def _last_line(text: str | None) -> str:
    lines = [line for line in (text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def build_table(tasks: list[TaskRow], memberships: dict[str, list[str]]) -> Table:
    params: list[str] = []
    metrics: list[str] = []
    flat_results = []
    for task in tasks:
        for key in task.params:
            if key not in params:
                params.append(key)
        flat = {}
        if task.result is not None:
            flat = flatten(task.result)
            if LOCAL not in flat and (mean := local_mean(task.result)) is not None:
                flat[LOCAL] = mean
        flat_results.append(flat)
    taken = set(HEAD) | set(TAIL) | set(params)
    renamed: dict[str, str] = {}
    for flat in flat_results:
        for key in flat:
            if key not in renamed:
                renamed[key] = f"metric.{key}" if key in taken else key
                metrics.append(renamed[key])
    rows = []
    for task, flat in zip(tasks, flat_results):
        row: dict[str, Any] = {
            "signature": task.signature, "experiments": ";".join(memberships.get(
                task.signature, [])),
            "state": task.state.value, "attempts": task.attempts, "task": task.task,
            "backend": task.backend, "elapsed_s": task.wall_s, "error_kind": task.error_kind,
            "error": _last_line(task.error) if task.state != TaskState.DONE else None}
        row.update({key: task.params.get(key) for key in params})
        row.update({renamed[key]: value for key, value in flat.items()})
        rows.append(row)
    rows.sort(key=lambda row: tuple(sort_key(row.get(key)) for key in params))
    varying = [key for key in params
               if len({canonical_json(row.get(key)) for row in rows}) > 1]
    # the other head columns vary only when several backends or task functions ran here
    return Table(params, metrics, rows, varying)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return str(value)


def csv_text(table: Table, rows: list[dict[str, Any]] | None = None) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.columns)
    for row in table.rows if rows is None else rows:
        writer.writerow([_cell(row.get(column)) for column in table.columns])
    return buffer.getvalue()


def write_results(out_dir: str | Path) -> list[Path]:
    """OUT/results.csv (every task planned in the folder) and OUT/experiments/NAME/
    results.csv (the tasks each experiment lists, a task shared by several in each)."""
    out_dir = Path(out_dir)
    state = State(out_dir)
    try:
        memberships = state.memberships()
        table = build_table(state.tasks(), memberships)
        names = [name for name, _ in state.experiments()]
    finally:
        state.close()
    written = [atomic_write(out_dir / "results.csv", csv_text(table), mode=0o644)]
    for name in names:
        rows = [row for row in table.rows if name in row["experiments"].split(";")]
        folder = out_dir / "experiments" / name
        folder.mkdir(parents=True, exist_ok=True)
        written.append(atomic_write(folder / "results.csv", csv_text(table, rows), mode=0o644))
    return written


# ---- summaries ------------------------------------------------------------------------

@dataclass
class Group:
    key: tuple  # values of Summary.by, in that order
    done: int = 0
    failed: int = 0
    other: int = 0  # pending or running
    values: dict[str, list[float]] = field(default_factory=dict)  # metric -> one per seed

    def stat(self, metric: str) -> tuple[float, float, int] | None:
        values = [v for v in self.values.get(metric, []) if math.isfinite(v)]
        if not values:
            return None
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        return statistics.fmean(values), spread, len(values)


@dataclass
class Summary:
    by: list[str]  # the varying parameters but the seed
    metrics: list[str]  # numeric metrics, the preferred ones first
    groups: list[Group]


def summarise(table: Table) -> Summary:
    by = [key for key in table.varying if key != SEED]
    numeric = [m for m in table.metrics
               if any(_number(row.get(m)) is not None for row in table.rows)]
    metrics = ([m for m in PREFERRED if m in numeric]
               + [m for m in numeric if m not in PREFERRED])
    groups: dict[str, Group] = {}
    for row in table.rows:
        key = tuple(row.get(p) for p in by)
        group = groups.setdefault(canonical_json(list(key)), Group(key))
        if row["state"] == TaskState.DONE:
            group.done += 1
            for metric in metrics:
                if (number := _number(row.get(metric))) is not None:
                    group.values.setdefault(metric, []).append(number)
        elif row["state"] == TaskState.FAILED:
            group.failed += 1
        else:
            group.other += 1
    ordered = sorted(groups.values(), key=lambda g: tuple(sort_key(v) for v in g.key))
    return Summary(by, metrics, ordered)


def _fmt(stat: tuple[float, float, int] | None) -> str:
    if stat is None:
        return "–"
    mean, spread, n = stat
    return f"{mean:.4g} ± {spread:.2g}" if n > 1 else f"{mean:.4g}"


def summary_markdown(experiment: str, summary: Summary, table: Table, plots: list[Path]
                     ) -> str:
    metrics = summary.metrics[:6]
    lines = [f"## {experiment}", "",
             f"{len(table.rows)} tasks; grouped by {', '.join(summary.by) or 'nothing'} "
             f"(mean ± std over {SEED}s and repeats, done tasks only).", ""]
    header = [*summary.by, "done", "failed", "not run", *metrics]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    for group in summary.groups:
        cells = [_cell(v) for v in group.key] + [str(group.done), str(group.failed),
                                                  str(group.other)]
        cells += [_fmt(group.stat(metric)) for metric in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    if plots:
        lines += [""] + [f"![{p.stem}]({p.as_posix()})" for p in plots]
    return "\n".join(lines) + "\n"


# ---- plots ----------------------------------------------------------------------------

def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _label(by: list[str], key: tuple) -> str:
    return ", ".join(f"{p}={_cell(v)}" for p, v in zip(by, key)) or "all"


def _numeric_axis(table: Table, key: str) -> bool:
    values = [row.get(key) for row in table.rows]
    return all(_number(v) is not None for v in values if v is not None)


def plot_against(summary: Summary, x: str, metric: str, path: Path) -> Path:
    """`metric` against parameter `x`: a line per combination of the other parameters."""
    others = [p for p in summary.by if p != x]
    series: dict[str, list[tuple[float, tuple[float, float, int]]]] = {}
    for group in summary.groups:
        stat = group.stat(metric)
        value = _number(group.key[summary.by.index(x)])
        if stat is None or value is None:
            continue
        label = _label(others, tuple(group.key[summary.by.index(p)] for p in others))
        series.setdefault(label, []).append((value, stat))
    fig = _figure()
    ax = fig.add_subplot()
    for label, points in series.items():
        points.sort()
        ax.errorbar([p[0] for p in points], [p[1][0] for p in points],
                    yerr=[p[1][1] for p in points], marker="o", capsize=3, label=label)
    values = sorted({_number(g.key[summary.by.index(x)]) for g in summary.groups} - {None})
    if values and values[0] > 0 and values[-1] / values[0] >= 50:
        ax.set_xscale("log")  # alpha 0.01 .. 100 spreads evenly
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {x} (mean ± std over {SEED}s)")
    ax.grid(alpha=0.3)
    if 1 < len(series) <= MAX_SERIES:
        ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def plot_groups(summary: Summary, metrics: list[tuple[str, str]], path: Path,
                title: str) -> Path:
    """Bars per group for each (metric, legend label), with error bars over seeds."""
    groups = [g for g in summary.groups if any(g.stat(m) for m, _ in metrics)]
    fig = _figure(max(6.0, 0.5 * len(groups) * len(metrics) + 2), 4.5)
    ax = fig.add_subplot()
    width = 0.8 / len(metrics)
    for index, (metric, label) in enumerate(metrics):
        stats = [g.stat(metric) or (math.nan, 0.0, 0) for g in groups]
        xs = [i + (index - (len(metrics) - 1) / 2) * width for i in range(len(groups))]
        ax.bar(xs, [s[0] for s in stats], width, yerr=[s[1] for s in stats], capsize=3,
               label=label)
    ax.set_xticks(range(len(groups)), [_label(summary.by, g.key) for g in groups],
                  rotation=30 if len(groups) > 3 else 0, ha="right" if len(groups) > 3
                  else "center", fontsize="small")
    ax.set_ylabel(metrics[0][0] if len(metrics) == 1 else METRIC)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(metrics) > 1:
        ax.legend(fontsize="small")
    fig.savefig(path)
    return path


def write_plots(summary: Summary, table: Table, folder: Path, metric: str = METRIC
                ) -> list[Path]:
    if metric not in summary.metrics:
        return []
    plots = []
    numeric = [p for p in summary.by if _numeric_axis(table, p)]
    for x in numeric:
        plots.append(plot_against(summary, x, metric, folder / f"{metric}_vs_{x}.png"))
    if not numeric and summary.by:
        plots.append(plot_groups(summary, [(metric, metric)], folder / f"{metric}_by_group.png",
                                 f"{metric} per group (mean ± std over {SEED}s)"))
    if LOCAL in summary.metrics and metric == METRIC:
        plots.append(plot_groups(summary, [(METRIC, "swarm"), (LOCAL, "local (mean of nodes)")],
                                 folder / "swarm_vs_local.png",
                                 f"swarm against local baselines (mean ± std over {SEED}s)"))
    return plots


@dataclass
class Section:
    """One experiment's part of the report."""

    experiment: str
    table: Table
    summary: Summary
    plots: list[Path]


@dataclass
class Report:
    results: list[Path]
    summary: Path
    sections: list[Section]

    @property
    def plots(self) -> list[Path]:
        return [plot for section in self.sections for plot in section.plots]


def write_report(out_dir: str | Path, report_dir: str | Path | None = None,
                 metric: str = METRIC) -> Report:
    """results.csv refreshed, then REPORT/summary.md (a section per experiment) and each
    experiment's plots in REPORT/<experiment>/ (REPORT: OUT/report)."""
    out_dir = Path(out_dir)
    folder = Path(report_dir) if report_dir else out_dir / "report"
    results = write_results(out_dir)
    state = State(out_dir)
    try:
        memberships = state.memberships()
        experiments = state.experiments()
        sections = []
        for name, _source in experiments:
            table = build_table(state.tasks(experiment=name), memberships)
            summary = summarise(table)
            plot_dir = folder / name
            plot_dir.mkdir(parents=True, exist_ok=True)
            for old in plot_dir.glob("*.png"):  # a plot the grid no longer calls for
                old.unlink()
            sections.append(Section(name, table, summary,
                                    write_plots(summary, table, plot_dir, metric)))
    finally:
        state.close()
    text = "# Sweep summary\n\n" + "\n".join(
        summary_markdown(s.experiment, s.summary, s.table,
                         [p.relative_to(folder) for p in s.plots]) for s in sections)
    path = atomic_write(folder / "summary.md", text, mode=0o644)
    return Report(results, path, sections)
