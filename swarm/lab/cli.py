"""`swarm sweep` (also `swarm-sweep`): run grids of experiments, see where they stand, report.

    swarm sweep CONFIG.yaml [CONFIG2.yaml ...] [--out DIR] [--workers N]
                [--backend inproc|process] [--ray ADDRESS] [--retries 3]
    swarm sweep status DIR
    swarm sweep report DIR

Exit status of a run: 0 every task done, 1 some failed, 2 bad input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from swarm.cli.args import whole_number
from swarm.lab import grid
from swarm.lab.report import write_report, write_results
from swarm.lab.state import AttemptRow, Counts, State, StateError, TaskState
from swarm.lab.sweep import BACKENDS, Options, SweepError, Watcher, check_tasks, run_sweep

PROG = "swarm sweep"
SHOWN_METRICS = ("accuracy", "loss")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{value:g} must be more than 0 seconds")
    return value


def run_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run the grid of tasks the experiment files expand to (lists multiply), "
                    "each distinct task once, with state in OUT/sweep.sqlite: a re-run, or a "
                    "run after a crash, redoes nothing finished. Also: `swarm sweep status "
                    "DIR`, `swarm sweep report DIR`.")
    parser.add_argument("configs", nargs="+", type=Path, metavar="CONFIG.yaml",
                        help="experiment files (see README, 'Experiment lab')")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="output folder (default: sweeps/<config name>)")
    parser.add_argument("--workers", type=whole_number(1), metavar="N",
                        help="tasks at once (default: one per CPU, or the Ray cluster's CPUs)")
    parser.add_argument("--backend", choices=BACKENDS, default="inproc",
                        help="how a task runs its swarm: simulated in one process (inproc, "
                             "default) or as real SN/SL processes (process); part of each "
                             "task's signature")
    parser.add_argument("--ray", metavar="ADDRESS", dest="ray_address",
                        help="run the tasks on the Ray cluster at ADDRESS (host:port, or "
                             "'auto'); needs the ray extra")
    parser.add_argument("--retries", type=whole_number(0), default=3, metavar="N",
                        help="tries after a task's first failure before it is recorded "
                             "failed (default 3)")
    parser.add_argument("--retry-failed", action="store_true",
                        help="give tasks recorded failed in DIR a fresh set of tries")
    parser.add_argument("--stale-after", type=positive_seconds, default=300.0, metavar="S",
                        help="reclaim a running task with no heartbeat for S seconds "
                             "(default 300; a task whose local worker died is reclaimed at "
                             "once)")
    parser.add_argument("--task-timeout", type=positive_seconds, metavar="S",
                        help="kill an attempt running longer than S seconds (default: none)")
    parser.add_argument("--report", action="store_true",
                        help="write the report (summary.md and plots) when the run ends")
    return parser


def dir_parser(verb: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"{PROG} {verb}", description=description)
    parser.add_argument("dir", type=Path, metavar="DIR", help="a sweep's output folder")
    if verb == "report":
        parser.add_argument("--out-dir", type=Path, metavar="REPORT",
                            help="where summary.md and the plots go (default: DIR/report)")
        parser.add_argument("--metric", default="accuracy",
                            help="the metric the plots show (default: accuracy)")
    return parser


def default_out(configs: list[Path]) -> Path:
    return Path("sweeps") / "+".join(path.stem for path in configs)


def _params_text(params: dict, limit: int = 6) -> str:
    items = [f"{key}={json.dumps(value) if isinstance(value, (list, dict)) else value}"
             for key, value in params.items()]
    return " ".join(items[:limit]) + (" …" if len(items) > limit else "")


def _metrics_text(result: dict | None) -> str:
    if not result:
        return ""
    shown = [f"{key}={result[key]:.4g}" for key in SHOWN_METRICS
             if isinstance(result.get(key), (int, float))]
    return " ".join(shown)


class LineWatcher(Watcher):
    """Not a terminal: one line per attempt that ended."""

    def __init__(self, out_dir: Path, stream=None):
        self.out_dir, self.stream = out_dir, stream or sys.stdout
        self.state: State | None = None
        self.total = 0

    def start(self, counts: Counts) -> None:
        self.state = State(self.out_dir)
        self.total = counts.total
        print(f"{PROG}: {counts.total} tasks, {counts.done} done already, "
              f"{counts.failed} failed, {counts.pending + counts.running} to run",
              file=self.stream, flush=True)

    def update(self, counts: Counts, ended: list[AttemptRow]) -> None:
        for attempt in ended:
            row = self.state.task(attempt.signature)
            params = _params_text(row.params) if row else ""
            head = f"[{attempt.outcome} {counts.done + counts.failed}/{counts.total}]"
            if attempt.outcome == TaskState.DONE:
                wall = f"{row.wall_s:.1f} s" if row and row.wall_s is not None else ""
                text = f"{_metrics_text(row.result if row else None)} ({wall})"
            else:
                last = (attempt.error or "").strip().splitlines()[-1:] or [""]
                text = f"attempt {attempt.attempt}: {attempt.error_kind}: {last[0]}"
            print(f"{head} {attempt.signature[:12]} {params} {text}", file=self.stream,
                  flush=True)

    def stop(self, counts: Counts) -> None:
        if self.state:
            self.state.close()


class BarWatcher(Watcher):
    """A terminal: a live bar with done, failed and running counts and the ETA."""

    def __init__(self, console: Console):
        self.progress = Progress(
            TextColumn("[bold]sweep"), BarColumn(), MofNCompleteColumn(),
            TextColumn("[green]{task.fields[done]} done[/] [red]{task.fields[failed]} "
                       "failed[/] [yellow]{task.fields[running]} running[/]"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            console=console)
        self.task = None

    def start(self, counts: Counts) -> None:
        self.progress.start()
        self.task = self.progress.add_task("sweep", total=counts.total,
                                           completed=counts.done + counts.failed,
                                           done=counts.done, failed=counts.failed,
                                           running=counts.running)

    def update(self, counts: Counts, ended: list[AttemptRow]) -> None:
        for attempt in ended:
            if attempt.outcome != TaskState.DONE:
                last = (attempt.error or "").strip().splitlines()[-1:] or [""]
                self.progress.console.print(
                    f"[red]{attempt.outcome}[/] {attempt.signature[:12]} attempt "
                    f"{attempt.attempt}: {attempt.error_kind}: {last[0]}", markup=True,
                    highlight=False)
        self.progress.update(self.task, total=counts.total,
                             completed=counts.done + counts.failed, done=counts.done,
                             failed=counts.failed, running=counts.running)

    def stop(self, counts: Counts) -> None:
        self.progress.stop()


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    try:
        experiments = grid.load(args.configs)
        check_tasks(experiments)
        plan = grid.plan(experiments, args.backend)
    except (grid.GridError, ValueError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    out = args.out or default_out(args.configs)
    if args.ray_address:
        from swarm.lab.ray_backend import ray
        if ray is None:
            print(f"{PROG}: error: --ray needs Ray: pip install 'swarm[ray]'", file=sys.stderr)
            return 2
    options = Options(workers=args.workers, backend=args.backend, retries=args.retries,
                      stale_after=args.stale_after, task_timeout=args.task_timeout,
                      retry_failed=args.retry_failed, ray_address=args.ray_address)
    console = Console(stderr=True)
    shared = sum(len(sigs) for sigs in plan.members.values()) - len(plan.tasks)
    watcher = BarWatcher(console) if console.is_terminal else LineWatcher(out)
    if console.is_terminal:
        console.print(f"{PROG}: {len(experiments)} experiments, {len(plan.tasks)} tasks"
                      + (f" ({shared} listed more than once, run once)" if shared else "")
                      + f" -> {out}")
    try:
        outcome = run_sweep(out, experiments, plan, options, watcher=watcher,
                            argv=[PROG, *argv])
    except StateError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except SweepError as error:
        write_results(out)
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 1
    written = write_results(out)
    counts = outcome.counts
    print(f"{PROG}: {counts.done} done, {counts.failed} failed, "
          f"{counts.pending + counts.running} not run; results: {written[0]}", flush=True)
    if outcome.interrupted:
        print(f"{PROG}: interrupted; run the same command again to go on", file=sys.stderr)
        return 130
    if args.report:
        report = write_report(out)
        print(f"{PROG}: report: {report.summary}" + "".join(f", {p.name}" for p in report.plots))
    return 1 if counts.failed else 0


def _age(seconds: float | None) -> str:
    return "–" if seconds is None else f"{time.time() - seconds:.0f} s ago"


def cmd_status(argv: list[str]) -> int:
    args = dir_parser("status", "Where a sweep stands: tasks per state for each "
                                "experiment, what runs, what failed and why.").parse_args(argv)
    try:
        state = State(args.dir)
    except StateError as error:
        print(f"{PROG} status: error: {error}", file=sys.stderr)
        return 2
    console = Console()
    try:
        tasks = {row.signature: row for row in state.tasks()}
        members = state.memberships()
        per_experiment: dict[str, dict[str, int]] = {}
        for sig, names in members.items():
            for name in names:
                counts = per_experiment.setdefault(name, {s.value: 0 for s in TaskState})
                counts[tasks[sig].state.value] += 1
        table = Table(title=f"sweep {args.dir}: {len(tasks)} tasks")
        table.add_column("experiment")
        table.add_column("source")
        for s in TaskState:
            table.add_column(s.value, justify="right")
        for name, source in state.experiments():
            counts = per_experiment.get(name, {})
            table.add_row(name, source, *(str(counts.get(s.value, 0)) for s in TaskState))
        total = state.counts()
        table.add_row("[bold]all (distinct)", "", *(str(getattr(total, s.value))
                                                     for s in TaskState))
        console.print(table)
        running = [row for row in tasks.values() if row.state == TaskState.RUNNING]
        if running:
            table = Table(title="running")
            for column in ("task", "attempt", "worker", "started", "heartbeat", "params"):
                table.add_column(column)
            for row in running:
                table.add_row(row.signature[:12], str(row.attempts), f"{row.pid}@{row.host}",
                              _age(row.started), _age(row.heartbeat), _params_text(row.params))
            console.print(table)
        failed = [row for row in tasks.values() if row.state == TaskState.FAILED]
        if failed:
            table = Table(title="failed")
            for column in ("task", "attempts", "reason", "error", "params"):
                table.add_column(column, overflow="fold")
            for row in failed:
                last = (row.error or "").strip().splitlines()[-1:] or [""]
                table.add_row(row.signature[:12], str(row.attempts), row.error_kind or "",
                              last[0], _params_text(row.params))
            console.print(table)
            console.print(f"full errors: sqlite3 {state.path} \"SELECT error FROM tasks "
                          "WHERE state='failed'\"; task output: "
                          f"{args.dir}/tasks/<task>/task.log", highlight=False)
    finally:
        state.close()
    return 0


def cmd_report(argv: list[str]) -> int:
    args = dir_parser("report", "Write DIR/results.csv, and summary.md and plots of the "
                                "grid (only for the parameters it varies).").parse_args(argv)
    try:
        report = write_report(args.dir, args.out_dir, args.metric)
    except StateError as error:
        print(f"{PROG} report: error: {error}", file=sys.stderr)
        return 2
    table = Table(title=f"swarm sweep report: {len(report.sections)} experiments")
    table.add_column("file")
    table.add_column("contents")
    table.add_row(str(report.results[0]), "one row per task: parameters, metrics, state")
    table.add_row(str(report.summary), "per experiment: mean ± std over seeds")
    for section in report.sections:
        for plot in section.plots:
            table.add_row(str(plot), f"{section.experiment}: plot")
        if not section.plots:
            table.add_row(f"(no plots for {section.experiment})",
                          f"no finished task reports {args.metric!r}"
                          if args.metric not in section.summary.metrics
                          else "nothing varies in its grid but the seed")
    Console().print(table)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "status":
        return cmd_status(argv[1:])
    if argv and argv[0] == "report":
        return cmd_report(argv[1:])
    if argv and argv[0] == "run":
        argv = argv[1:]
    return cmd_run(argv)


if __name__ == "__main__":
    sys.exit(main())
