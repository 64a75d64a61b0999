"""`swarm report` (also `swarm-report`): summary.json, per_class_accuracy.csv and plots
from every metrics.json below a results root."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from swarm.cli.args import whole_number
from swarm.report.collect import ReportError, collect, drop_short
from swarm.report.plots import Output, write_plots
from swarm.report.summary import write_per_class_csv, write_summary


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="swarm report",
        description="Summarise and plot the metrics.json files that swarm nodes and local "
                    "baselines wrote below a results root. A run is the directory holding the "
                    "node model directories (ROOT/<run>/<node>/metrics.json), unless the "
                    "node's config has a \"run\" key.")
    parser.add_argument("--results-root", type=Path, required=True,
                        help="directory searched recursively for metrics.json files")
    parser.add_argument("--out-dir", type=Path, required=True,
                        help="where summary.json, per_class_accuracy.csv and the PNGs go")
    parser.add_argument("--min-epochs", type=whole_number(0), default=0, metavar="N",
                        help="leave out node runs with fewer than N epochs of history")
    return parser


def _table(outputs: list[Output], out_dir: Path, node_runs: int) -> Table:
    table = Table(title=f"swarm report: {node_runs} node runs -> {out_dir}")
    table.add_column("file")
    table.add_column("contents")
    for output in outputs:
        style = "dim" if output.path is None else ""
        table.add_row(output.name, output.description, style=style)
    return table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        runs = drop_short(collect(args.results_root), args.min_epochs)
    except ReportError as error:
        print(f"swarm report: error: {error}", file=sys.stderr)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    summary = write_summary(runs, args.results_root, args.out_dir, args.min_epochs)
    csv_path = write_per_class_csv(runs, args.out_dir)
    outputs = [Output(summary.name, "mean ± std per node, run and mode", summary),
               Output(csv_path.name, "per-class val accuracy", csv_path),
               *write_plots(runs, args.out_dir)]
    Console().print(_table(outputs, args.out_dir, len(runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
