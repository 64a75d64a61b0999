"""The PNG plots of `swarm report`, drawn with matplotlib's Agg canvas (no display).

Curves are per node (node name and mode): the mean over runs, with a ±1 std band when
there are several runs. Swarm nodes are solid lines and circles, local baselines dashed
lines and squares. A plot that has nothing to show (no local baselines, no sync rounds,
no confusion matrices) is skipped, with the reason, instead of drawn empty.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from swarm.metrics import MODES
from swarm.report.collect import NodeRun, natural_key
from swarm.report.summary import group, stats

DPI = 120
MAX_LEGEND_ENTRIES = 24  # more series than this: the legend would not fit, so none
MAX_ANNOTATED_CLASSES = 20  # confusion heatmaps print cell values up to this many classes
MAX_TICK_LABELS = 25  # class names on a confusion heatmap axis
MAX_NODE_TICKS = 40
LINESTYLE = {"swarm": "-", "local": "--"}
MARKER = {"swarm": "o", "local": "s"}
MODE_COLOR = {"swarm": "tab:blue", "local": "tab:orange"}


@dataclass(frozen=True)
class Output:
    """One file `swarm report` wrote, or (path None) one it skipped and why."""

    name: str
    description: str
    path: Path | None = None


Series = tuple[str, str]  # (node, mode)


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _colors(n: int) -> list:
    """n distinguishable colours: tab10/tab20 while they last, then a continuous map."""
    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0, 0.95, n)]


def _series_label(node: str, mode: str) -> str:
    return node if mode == "swarm" else f"{node} (local)"


def _node_series(runs: list[NodeRun]) -> dict[Series, list[NodeRun]]:
    """Node runs per (node, mode), in node order, a node's swarm series before its local one."""
    groups = group(runs, lambda r: (r.node, r.mode))
    return dict(sorted(groups.items(), key=lambda item: (natural_key(item[0][0]),
                                                          MODES.index(item[0][1]))))


def _node_colors(runs: list[NodeRun]) -> dict[str, object]:
    """One colour per node name, shared by its swarm and local series."""
    nodes = list(dict.fromkeys(node for node, _ in _node_series(runs)))
    return dict(zip(nodes, _colors(len(nodes))))


def _legend(fig: Figure, handles: list, title: str | None = None) -> None:
    """A legend outside the axes on the right; just a count when too many entries to read."""
    if len(handles) > MAX_LEGEND_ENTRIES:
        fig.legend(handles=[], loc="outside right upper", fontsize="small",
                   title=f"{len(handles)} entries:\ntoo many to list")
    elif handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize="small", title=title,
                   ncols=1 if len(handles) <= 12 else 2)


def _mean_curve(points: list[tuple[list, list]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and std over runs of (x, y) curves, aligned on x; a run without x is left out."""
    by_x: dict[float, list[float]] = {}
    for xs, ys in points:
        for x, y in zip(xs, ys):
            if y is not None and math.isfinite(y):
                by_x.setdefault(x, []).append(y)
    keys = sorted(by_x)
    means = np.array([np.mean(by_x[x]) for x in keys])
    stds = np.array([np.std(by_x[x], ddof=1) if len(by_x[x]) > 1 else 0.0 for x in keys])
    return np.array(keys, dtype=np.float64), means, stds


def _draw_curves(ax, series: dict[Series, list[tuple[list, list]]], colors: dict) -> list:
    """Lines (mean) and bands (±std) per series; returns the legend handles."""
    handles = []
    for (node, mode), points in series.items():
        xs, means, stds = _mean_curve(points)
        if not xs.size:
            continue
        color = colors[node]
        (line,) = ax.plot(xs, means, LINESTYLE[mode], color=color, linewidth=1.6,
                          marker=MARKER[mode] if xs.size <= 15 else None, markersize=3.5,
                          label=_series_label(node, mode))
        if np.any(stds > 0):
            ax.fill_between(xs, means - stds, means + stds, color=color, alpha=0.15, linewidth=0)
        handles.append(line)
    return handles


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")


def _integer_ticks(ax) -> None:
    ax.xaxis.get_major_locator().set_params(integer=True)


def _curve_plot(runs: list[NodeRun], path: Path, quantity: str, ylabel: str) -> Path:
    """Two panels, train and validation `quantity` ("acc" or "loss") per epoch."""
    colors = _node_colors(runs)
    fig = _figure(12, 4.6)
    axes = fig.subplots(1, 2, sharey=True)
    handles: dict[str, object] = {}  # by label: a series drawn in either panel
    for ax, split, title in zip(axes, ("train", "val"), ("Training", "Validation")):
        key = f"{split}_{quantity}"
        series = {s: [(r.data["history"].get("epoch") or [], r.data["history"].get(key) or [])
                      for r in members] for s, members in _node_series(runs).items()}
        drawn = _draw_curves(ax, series, colors)
        if not drawn:
            _no_data(ax, f"no {key} history recorded")
        for line in drawn:
            handles.setdefault(line.get_label(), line)
        ax.set_title(f"{title} {ylabel.lower()}")
        ax.set_xlabel("Epoch")
        ax.grid(alpha=0.3)
        _integer_ticks(ax)
    axes[0].set_ylabel(ylabel)
    if quantity == "acc":
        axes[0].set_ylim(0, 1.02)
    _legend(fig, list(handles.values()), "node")
    fig.suptitle(f"{ylabel} per epoch (mean over runs, band ±1 std)")
    return _save(fig, path)


def plot_accuracy_curves(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    path = _curve_plot(runs, out_dir / "accuracy_curves.png", "acc", "Accuracy")
    return [Output(path.name, "accuracy per epoch, per node", path)]


def plot_loss_curves(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    path = _curve_plot(runs, out_dir / "loss_curves.png", "loss", "Loss")
    return [Output(path.name, "loss per epoch, per node", path)]


def _rotate_if_crowded(ax, labels: list[str]) -> None:
    if len(labels) > 6 or max(map(len, labels), default=0) > 8:
        ax.tick_params(axis="x", labelrotation=45)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")


def plot_val_acc_per_node(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """Bars: each node's final validation accuracy (mean ± std over runs, runs as dots)."""
    series = _node_series(runs)
    nodes = list(dict.fromkeys(node for node, _ in series))
    modes = [m for m in MODES if any(mode == m for _, mode in series)]
    width = 0.8 / len(modes)
    fig = _figure(float(np.clip(1.5 + 0.5 * len(nodes) * len(modes), 7.0, 16.0)), 4.6)
    ax = fig.subplots()
    rng = np.random.default_rng(0)  # fixed jitter: the same picture every time
    for i, mode in enumerate(modes):
        offset = (i - (len(modes) - 1) / 2) * width
        for j, node in enumerate(nodes):
            values = [r.data.get("val_acc") for r in series.get((node, mode), [])]
            summary = stats(values)
            if not summary["n"]:
                continue
            x = j + offset
            ax.bar(x, summary["mean"], width * 0.9, yerr=summary["std"] or None, capsize=3,
                   color=MODE_COLOR[mode], alpha=0.75)
            dots = [v for v in values if v is not None]
            ax.scatter(x + rng.uniform(-width * 0.2, width * 0.2, len(dots)), dots, s=12,
                       color="black", zorder=3)
    ticks = _tick_positions(len(nodes), MAX_NODE_TICKS)
    ax.set_xticks(ticks, [nodes[i] for i in ticks])
    _rotate_if_crowded(ax, nodes)
    ax.set_xlabel("Node")
    ax.set_ylabel("Final validation accuracy")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], color=MODE_COLOR[m], linewidth=8, alpha=0.75, label=m) for m in modes]
    handles.append(Line2D([], [], color="black", marker="o", linestyle="", markersize=4,
                          label="one run"))
    _legend(fig, handles)
    ax.set_title("Final validation accuracy per node\n(mean ± std over runs)")
    path = _save(fig, out_dir / "val_acc_per_node.png")
    return [Output(path.name, "final val accuracy per node", path)]


def plot_swarm_vs_local(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """Left: final validation accuracy by mode; right: each node's swarm vs local accuracy."""
    name = "swarm_vs_local.png"
    modes = {r.mode for r in runs}
    if modes != {"swarm", "local"}:
        missing = ({"swarm", "local"} - modes).pop()
        return [Output(name, f"skipped: no {missing} runs")]
    fig = _figure(10.5, 4.8)
    left, right = fig.subplots(1, 2, width_ratios=[1, 1.2])
    rng = np.random.default_rng(0)
    ticks = []
    # Only nodes trained both ways compare like with like; a local-only node (e.g. a
    # centralised reference) is drawn as a line of its own instead of joining the bar.
    both = {r.node for r in runs if r.mode == "swarm"} & {r.node for r in runs if r.mode == "local"}
    for node in sorted({r.node for r in runs if r.mode == "local"} - both):
        values = [r.data.get("val_acc") for r in runs if r.node == node and r.mode == "local"]
        reference = stats(v for v in values if v is not None)
        if reference["n"]:
            left.axhline(reference["mean"], linestyle="--", color="gray", linewidth=1,
                         label=f"{node} (local only): {reference['mean']:.3f}")
    if left.get_legend_handles_labels()[0]:
        left.legend(loc="upper left", fontsize="small")
    for i, mode in enumerate(("local", "swarm")):
        values = [r.data.get("val_acc") for r in runs if r.mode == mode and r.node in both]
        values = [v for v in values if v is not None]
        summary = stats(values)
        left.bar(i, summary["mean"] or 0.0, 0.6, yerr=summary["std"] or None, capsize=4,
                 color=MODE_COLOR[mode], alpha=0.75)
        left.scatter(i + rng.uniform(-0.15, 0.15, len(values)), values, s=12, color="black",
                     zorder=3)
        label = "local baseline" if mode == "local" else "swarm"
        ticks.append(f"{label}\n{summary['mean']:.3f} ± {summary['std']:.3f}" if summary["n"]
                     else label)
    left.set_xticks([0, 1], ticks)
    left.set_ylabel("Final validation accuracy")
    left.set_ylim(0, 1.15)
    left.grid(axis="y", alpha=0.3)
    left.set_title("Nodes trained both ways (mean ± std)")

    colors = _node_colors(runs)
    series = _node_series(runs)
    pairs = [(node, series[(node, "local")], series[(node, "swarm")])
             for node in colors if (node, "local") in series and (node, "swarm") in series]
    handles, extent = [], []
    for node, local, swarm in pairs:
        x, y = stats(r.data.get("val_acc") for r in local), stats(r.data.get("val_acc") for r in swarm)
        if x["n"] and y["n"]:
            handles.append(right.errorbar(x["mean"], y["mean"], xerr=x["std"] or None,
                                          yerr=y["std"] or None, fmt="o", color=colors[node],
                                          capsize=3, label=node))
            extent += [x["mean"] - x["std"], x["mean"] + x["std"],
                       y["mean"] - y["std"], y["mean"] + y["std"]]
    # One range for both axes, zoomed on the points, so the diagonal stays the diagonal.
    low, high = (max(0.0, min(extent) - 0.05), min(1.0, max(extent) + 0.05)) if extent else (0.0, 1.0)
    right.plot([low, high], [low, high], ":", color="gray", linewidth=1)
    right.text(0.96, 0.04, "above the dotted line: swarm better", transform=right.transAxes,
               va="bottom", ha="right", color="gray", fontsize="small")
    if not handles:
        _no_data(right, "no node was trained both ways")
    right.set_xlim(low, high)
    right.set_ylim(low, high)
    right.set_xlabel("Local baseline validation accuracy")
    right.set_ylabel("Swarm validation accuracy")
    right.grid(alpha=0.3)
    right.set_title("Per node (mean ± std over runs)")
    _legend(fig, handles, "node")
    fig.suptitle("Swarm versus local baseline: final validation accuracy")
    path = _save(fig, out_dir / name)
    return [Output(name, "swarm vs local baseline", path)]


def plot_val_acc_histogram(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """Histogram of the final validation accuracy of every node run, per mode."""
    by_mode = {m: [r.data["val_acc"] for r in runs if r.mode == m and r.data.get("val_acc") is not None]
               for m in ("swarm", "local")}
    everything = [v for values in by_mode.values() for v in values]
    name = "val_acc_histogram.png"
    if not everything:
        return [Output(name, "skipped: no final validation accuracy recorded")]
    low, high = min(everything), max(everything)
    if high - low < 0.02:  # all alike: a narrow window around them, not numpy's ±0.5
        low, high = low - 0.01, high + 0.01
    bins = np.histogram_bin_edges(everything, bins=int(np.clip(2 * math.sqrt(len(everything)), 5, 30)),
                                  range=(low, high))
    fig = _figure(7, 4.4)
    ax = fig.subplots()
    for mode, values in by_mode.items():
        if values:
            ax.hist(values, bins=bins, alpha=0.6, color=MODE_COLOR[mode], edgecolor="white",
                    label=f"{mode} ({len(values)} node runs)")
    ax.set_xlabel("Final validation accuracy")
    ax.set_ylabel("Node runs")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize="small")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title("Distribution of final validation accuracy")
    path = _save(fig, out_dir / name)
    return [Output(name, "final val accuracy histogram", path)]


def plot_train_vs_val(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """Scatter of final train against validation accuracy per node run: the gap is overfitting."""
    name = "train_vs_val_acc.png"
    points = [r for r in runs if r.data.get("train_acc") is not None and r.data.get("val_acc") is not None]
    if not points:
        return [Output(name, "skipped: no run has both train and validation accuracy")]
    colors = _node_colors(runs)
    fig = _figure(7.2, 5.6)
    ax = fig.subplots()
    for run in points:
        ax.scatter(run.data["train_acc"], run.data["val_acc"], color=colors[run.node],
                   marker=MARKER[run.mode], s=36, edgecolor="black", linewidth=0.4)
    values = [v for r in points for v in (r.data["train_acc"], r.data["val_acc"])]
    # A little past 1.0, so that markers at a perfect score are not cut in half.
    low = max(0.0, min(values) - 0.05)
    high = min(1.02, max(values) + 0.05)
    ax.plot([low, high], [low, high], ":", color="gray", linewidth=1)
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)
    ax.set_xlabel("Final training accuracy")
    ax.set_ylabel("Final validation accuracy")
    ax.grid(alpha=0.3)
    ax.set_title("Training versus validation accuracy\n(below the dotted line: overfitting)")
    modes = sorted({r.mode for r in points}, reverse=True)
    ax.legend(handles=[Line2D([], [], color="gray", marker=MARKER[m], linestyle="", label=m)
                       for m in modes], fontsize="small", loc="upper left", title="mode")
    shown = {r.node for r in points}
    _legend(fig, [Line2D([], [], color=colors[n], marker="o", linestyle="", markeredgecolor="black",
                         markeredgewidth=0.4, label=n) for n in colors if n in shown], "node")
    path = _save(fig, out_dir / name)
    return [Output(name, "final train vs val accuracy", path)]


def plot_rounds(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """The merged model's validation accuracy after each sync round, per node."""
    name = "merged_val_acc_per_round.png"
    with_rounds = [r for r in runs if r.data.get("rounds")]
    if not with_rounds:
        return [Output(name, "skipped: no sync rounds recorded")]
    colors = _node_colors(runs)
    series = {s: [([p["round"] for p in r.data["rounds"]], [p.get("val_acc") for p in r.data["rounds"]])
                  for r in members] for s, members in _node_series(with_rounds).items()}
    fig = _figure(9, 4.6)
    ax = fig.subplots()
    handles = _draw_curves(ax, series, colors)
    if not handles:
        _no_data(ax, "no merged-model accuracy recorded")
    ax.set_xlabel("Sync round")
    ax.set_ylabel("Merged-model validation accuracy")
    ax.set_ylim(0, 1.02)
    _integer_ticks(ax)
    ax.grid(alpha=0.3)
    ax.set_title("Merged model after each sync round, on each node's validation set")
    _legend(fig, handles, "node")
    path = _save(fig, out_dir / name)
    return [Output(name, "merged model per sync round", path)]


def _tick_positions(n: int, most: int = MAX_TICK_LABELS) -> np.ndarray:
    """Every position up to `most` of them, else every k-th so that about `most` show."""
    return np.arange(0, n, max(1, math.ceil(n / most)))


def confusion_figure(matrix: np.ndarray, classes: list[str], title: str) -> Figure:
    """Row-normalised confusion heatmap; cell values only up to MAX_ANNOTATED_CLASSES
    classes, and tick labels thinned beyond MAX_TICK_LABELS, so 100 classes stay readable."""
    n = len(classes)
    support = matrix.sum(axis=1, keepdims=True)
    rates = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    size = 5.5 if n <= 10 else 8.5
    fig = _figure(size + 1.4, size)
    ax = fig.subplots()
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    ticks = _tick_positions(n)
    labels = [classes[i] for i in ticks]
    ax.set_xticks(ticks, labels, rotation=90 if n > 10 or max(map(len, labels)) > 6 else 0,
                  fontsize="small" if n <= MAX_ANNOTATED_CLASSES else "x-small")
    ax.set_yticks(ticks, labels, fontsize="small" if n <= MAX_ANNOTATED_CLASSES else "x-small")
    if n <= MAX_ANNOTATED_CLASSES:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, f"{rates[i, j]:.2f}".lstrip("0") if rates[i, j] < 1 else "1",
                            ha="center", va="center", fontsize=7 if n > 10 else 8,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, shrink=0.8, label="Fraction of the true class")
    return fig


def _file_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "node"


def plot_confusion(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """One heatmap per node (and mode): its confusion matrices summed over runs."""
    outputs: list[Path] = []
    for (node, mode), members in _node_series(runs).items():
        with_matrix = [r for r in members if r.data.get("confusion_matrix")]
        if not with_matrix:
            continue
        classes = with_matrix[0].data.get("classes") or [
            str(i) for i in range(len(with_matrix[0].data["confusion_matrix"]))]
        same = [r for r in with_matrix if (r.data.get("classes") or classes) == classes]
        matrix = np.sum([np.asarray(r.data["confusion_matrix"]) for r in same], axis=0)
        title = (f"{node} ({mode}): confusion "
                 f"({len(same)} run{'s' if len(same) > 1 else ''}, {int(matrix.sum())} samples)")
        outputs.append(_save(confusion_figure(matrix, classes, title),
                             out_dir / "confusion" / f"confusion_{mode}_{_file_part(node)}.png"))
    if not outputs:
        return [Output("confusion/", "skipped: no confusion matrices recorded")]
    return [Output("confusion/confusion_<mode>_<node>.png",
                   f"{len(outputs)} confusion heatmaps", out_dir / "confusion")]


PLOTS: tuple[Callable[[list[NodeRun], Path], list[Output]], ...] = (
    plot_accuracy_curves, plot_loss_curves, plot_val_acc_per_node, plot_swarm_vs_local,
    plot_val_acc_histogram, plot_train_vs_val, plot_rounds, plot_confusion,
)


def write_plots(runs: list[NodeRun], out_dir: Path) -> list[Output]:
    """Draws every plot of `runs` into `out_dir`; returns what was written or skipped."""
    return [output for plot in PLOTS for output in plot(runs, out_dir)]
