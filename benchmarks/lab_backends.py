"""Tasks per minute of the lab's two backends on this machine (small digits tasks, N=4).

Each task is `swarm.lab.tasks.run_task` with digits, 4 IID nodes, a 64-32-10 MLP, SGD,
batch 16, sync every 8 batches, EPOCHS epochs, seeds 0, 1, 2, ...:
- inproc: the 4 nodes as threads of one process on the round hub (no network), run
  one after the other in this process, and in a pool of WORKERS processes;
- process: each task a real swarm (sentinel SN on its embedded ledger, 4 SL nodes over
  mutual TLS, 4 sidecars: 9 processes), one task at a time.
It also checks, on the first seed, that both backends end with bit-identical weights.

    .venv/bin/python benchmarks/lab_backends.py [--inproc-tasks 60] [--process-tasks 3]
        [--workers 2] [--epochs 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swarm.lab.tasks import run_task  # noqa: E402


def params(seed: int, epochs: int) -> dict:
    return {"dataset": "digits", "nodes": 4, "partition": "iid", "width": 32, "depth": 1,
            "batch_size": 16, "sync_every": 8, "epochs": epochs, "seed": seed}


def one(args: tuple[int, int, str, str]) -> tuple[float, dict]:
    seed, epochs, backend, root = args
    started = time.perf_counter()
    result = run_task(params(seed, epochs), backend=backend,
                      workdir=Path(root) / f"{backend}-{seed}")
    return time.perf_counter() - started, result


def measure(tasks: int, epochs: int, backend: str, workers: int, root: str) -> dict:
    jobs = [(seed, epochs, backend, root) for seed in range(tasks)]
    started = time.perf_counter()
    if workers == 1:
        runs = [one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(workers) as pool:
            pool.submit(run_task, params(0, 1), workdir=Path(root) / "warm").result()
            started = time.perf_counter()  # workers started and data loaded: not counted
            runs = list(pool.map(one, jobs))
    total = time.perf_counter() - started
    return {"backend": backend, "workers": workers, "tasks": tasks, "total_s": total,
            "median_s": statistics.median(t for t, _ in runs),
            "per_min": 60 * tasks / total,
            "accuracy": statistics.median(r["accuracy"] for _, r in runs),
            "rounds": runs[0][1]["rounds"], "first": runs[0][1]["weights_sha256"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inproc-tasks", type=int, default=60)
    parser.add_argument("--process-tasks", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="inproc pool size (default 2)")
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args(argv)
    console = Console(width=120)
    with tempfile.TemporaryDirectory(prefix="lab-bench-") as root:
        run_task(params(0, 1), workdir=Path(root) / "warm")  # data loaded, imports done
        rows = [measure(args.inproc_tasks, args.epochs, "inproc", 1, root)]
        if args.workers > 1:
            rows.append(measure(args.inproc_tasks, args.epochs, "inproc", args.workers, root))
        if args.process_tasks:
            rows.append(measure(args.process_tasks, args.epochs, "process", 1, root))
    table = Table(title=f"Lab backends: digits, N=4, {args.epochs} epochs, sync every 8 batches")
    for column in ("backend", "workers", "tasks", "total s", "median s/task", "tasks/min",
                   "median accuracy", "rounds/task"):
        table.add_column(column, justify="left" if column == "backend" else "right")
    for row in rows:
        table.add_row(row["backend"], str(row["workers"]), str(row["tasks"]),
                      f"{row['total_s']:.1f}", f"{row['median_s']:.2f}", f"{row['per_min']:.1f}",
                      f"{row['accuracy']:.3f}", str(row["rounds"]))
    console.print(table)
    inproc, process = rows[0], rows[-1]
    if process["backend"] == "process":
        same = inproc["first"] == process["first"]
        console.print(f"seed 0: inproc and process final weights "
                      f"{'bit-identical' if same else 'DIFFER'} ({inproc['first'][:16]}…); "
                      f"inproc is {process['median_s'] / inproc['median_s']:.0f}x faster per task")
        return 0 if same else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
