"""The learning-quality table: does the swarm learn what it should, and do robust merges
hold under attack? Every number is the lab's in-process simulation
(``swarm.lab.tasks.run_task(backend="inproc")``: N nodes through the real callback core
and the real merge modules), on scikit-learn's digits (1397 train / 400 test) with a
64-32-10 MLP, SGD lr 0.5, batch 32, a sync every 4 batches, 40 epochs, over seeds 0-2
(with 30 epochs one Dirichlet node of one seed gains only 9.5 points: nodes with more data
train more batches, so the last rounds are theirs alone):

- IID, N=4: the swarm against one node holding all the data (centralised).
  Goal: within 1 point of centralised.
- Dirichlet(0.3), N=4: the swarm against every node trained alone on its own share.
  Goal: every node at least 10 points above itself alone.
- 25 % label-flipping nodes (2 of 8; y -> 9 - y), N=8, for each merge method, against the
  clean swarm (mean, no attack). Goal: the best robust merge within 2 points of clean.
- 25 % sign-flipping nodes scaled x10 (they send r - 10 (w - r)), N=8, each merge
  method. Goal: the best robust merge within 2 points of clean, while mean collapses.
- The same tasks twice: bit-identical final weights (SHA-256 of the final model).

A run that diverges (NaN/Inf) is a result, shown as "diverged", not an error.

    .venv/bin/python benchmarks/learning.py [--seeds 0 1 2] [--epochs 40] [--sync-every 4] [--workers 1]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from concurrent import futures
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from swarm.lab.tasks import run_task  # noqa: E402
from swarm.merging import MERGE_METHODS  # noqa: E402

BASE = {"dataset": "digits", "width": 32, "depth": 1, "optimizer": "sgd", "lr": 0.5,
        "batch_size": 32, "sync_every": 4}
ROBUST = tuple(m for m in MERGE_METHODS if m != "mean")
IID_GOAL, DIRICHLET_GOAL, ROBUST_GOAL, COLLAPSED = 0.01, 0.10, 0.02, 0.5


def run(params: dict) -> dict:
    return run_task(params, backend="inproc")


def mean_acc(results: list[dict]) -> float:
    """Mean test accuracy over seeds; NaN if any seed diverged."""
    accs = [r["accuracy"] for r in results]
    return float("nan") if any(not math.isfinite(a) for a in accs) else statistics.fmean(accs)


def fmt(acc: float) -> str:
    return "diverged" if not math.isfinite(acc) else f"{acc:.3f}"


def verdict(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]NOT met[/]"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--sync-every", type=int, default=BASE["sync_every"], help="batches")
    parser.add_argument("--workers", type=int, default=1, help="tasks at once (processes)")
    args = parser.parse_args(argv)
    base = {**BASE, "epochs": args.epochs, "sync_every": args.sync_every}

    # Every task of the table, keyed by (cell, seed); the same seeds twice for determinism.
    tasks: dict[tuple, dict] = {}
    for seed in args.seeds:
        s = {**base, "seed": seed}
        tasks["iid-swarm", seed] = {**s, "nodes": 4}
        tasks["iid-central", seed] = {**s, "nodes": 1}
        tasks["dirichlet", seed] = {**s, "nodes": 4, "partition": "dirichlet", "alpha": 0.3,
                                    "local_baseline": True}
        tasks["clean8", seed] = {**s, "nodes": 8}
        for merge in MERGE_METHODS:
            tasks["labelflip", merge, seed] = {**s, "nodes": 8, "merge": merge,
                                               "attack": "labelflip", "poison_ratio": 0.25}
            tasks["signflip", merge, seed] = {**s, "nodes": 8, "merge": merge,
                                              "attack": "signflip", "poison_ratio": 0.25,
                                              "attack_scale": 10}
    seed0 = args.seeds[0]
    twice = [("iid-swarm", seed0), ("labelflip", "coordmedian", seed0),
             ("signflip", "trimmedmean", seed0)]
    for key in twice:
        tasks[("again",) + key] = tasks[key]

    started = time.perf_counter()
    console = Console(width=max(Console().width, 120))
    console.print(f"{len(tasks)} tasks (inproc), {args.workers} at a time ...")
    with futures.ProcessPoolExecutor(args.workers) as pool:
        done = dict(zip(tasks, pool.map(run, tasks.values())))
    wall = time.perf_counter() - started

    def over_seeds(*cell) -> list[dict]:
        return [done[cell + (seed,)] for seed in args.seeds]

    table = Table(title=f"Learning quality: digits, MLP 64-32-10, seeds "
                        f"{', '.join(map(str, args.seeds))} ({wall:.0f} s)")
    for column in ("case", "swarm", "against", "difference", "goal"):
        table.add_column(column, justify="left" if column in ("case", "goal") else "right")

    iid, central = mean_acc(over_seeds("iid-swarm")), mean_acc(over_seeds("iid-central"))
    table.add_row("IID N=4 vs centralised", fmt(iid), fmt(central), f"{iid - central:+.3f}",
                  f"within {IID_GOAL:.2f}: {verdict(iid >= central - IID_GOAL)}")

    gains = []
    for r in over_seeds("dirichlet"):
        gains += [r["accuracy"] - alone for alone in r["local_accuracy"]]
    dirichlet = mean_acc(over_seeds("dirichlet"))
    alone = statistics.fmean(r["local_accuracy_mean"] for r in over_seeds("dirichlet"))
    worst = min(gains) if all(math.isfinite(g) for g in gains) else float("nan")
    table.add_row("Dirichlet(0.3) N=4 vs each node alone", fmt(dirichlet),
                  f"{alone:.3f} (mean)", f"min {worst:+.3f}",
                  f">= +{DIRICHLET_GOAL:.2f} every node: {verdict(worst >= DIRICHLET_GOAL)}")

    clean = mean_acc(over_seeds("clean8"))
    table.add_row("clean N=8 (mean)", fmt(clean), "", "", "", end_section=True)
    for attack, label in (("labelflip", "25% label flip N=8"),
                          ("signflip", "25% sign flip x10 N=8")):
        accs = {m: mean_acc(over_seeds(attack, m)) for m in MERGE_METHODS}
        best = max((accs[m] for m in ROBUST if math.isfinite(accs[m])), default=float("nan"))
        for merge in MERGE_METHODS:
            goal = ""
            if merge == "mean" and attack == "signflip":
                collapsed = not math.isfinite(accs[merge]) or accs[merge] < COLLAPSED
                goal = f"collapses: {verdict(collapsed)}"
            elif merge != "mean" and accs[merge] == best:
                goal = f"best robust within {ROBUST_GOAL:.2f}: {verdict(best >= clean - ROBUST_GOAL)}"
            diff = accs[merge] - clean
            table.add_row(f"{label}, {merge}", fmt(accs[merge]), "clean",
                          f"{diff:+.3f}" if math.isfinite(diff) else "", goal,
                          end_section=merge == MERGE_METHODS[-1])

    for key in twice:
        first, second = done[key], done[("again",) + key]
        same = first["weights_sha256"] == second["weights_sha256"] and \
            first["diverged"] == second["diverged"] and \
            (first["diverged"] or first["weights_sha256"] != "")
        table.add_row(f"same seed twice: {' '.join(map(str, key))}",
                      first["weights_sha256"][:12] or "diverged",
                      second["weights_sha256"][:12] or "diverged", "",
                      f"bit-identical: {verdict(same)}")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
