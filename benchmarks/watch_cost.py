"""What watching a swarm costs its rounds: round time with and without metrics, printed as a table.

N SL nodes (real run-sl processes with synthetic sidecars) and a sentinel SN, as in
sl_rounds.py, run the same rounds in three set-ups, alternated over `--repeats` runs:
- off: no metrics endpoint, no progress line (`--progress off`);
- metrics: `--metrics-port` on the SN and every SL node, each scraped every
  `--scrape-s` seconds (a Prometheus far busier than its 15 s default);
- watched: metrics as above, plus the progress line in every run-sl (one GetStatus
  with the read model's snapshot per 10 s each) and `swarm status --json`-style
  snapshots of the SN polled every second (what `swarm status --watch` does).
Round time is the median over rounds of the slowest node's (sl_rounds.summarise);
the ratio is each set-up's median over the off set-up's. CPU is the user+system time
of every process of a run (SN, SL nodes, sidecars: this script's children), a figure
that a busy shared machine disturbs far less than wall-clock round times.

    .venv/bin/python benchmarks/watch_cost.py [--nodes 4] [--model-mb 1] [--rounds 8]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from sl_rounds import run_swarm, summarise  # noqa: E402
from sn_control_plane import Workspace, free_port  # noqa: E402

SETUPS = ("off", "metrics", "watched")


class Watcher:
    """Scrapes /metrics endpoints and (watched) polls the SN's snapshot, in threads."""

    def __init__(self, ports: list[int], scrape_s: float, sn_target: str | None, tls):
        self._stop = threading.Event()
        self.scrapes = 0
        self.snapshots = 0
        self._threads = [threading.Thread(target=self._scrape, args=(ports, scrape_s),
                                          daemon=True)]
        if sn_target is not None:
            self._threads.append(threading.Thread(target=self._poll, args=(sn_target, tls),
                                                  daemon=True))
        for t in self._threads:
            t.start()

    def _scrape(self, ports, every_s):
        while not self._stop.wait(every_s):
            for port in ports:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics",
                                                timeout=5) as reply:
                        reply.read()
                    self.scrapes += 1
                except OSError:
                    pass  # not up yet, or already gone

    def _poll(self, target, tls):
        from swarm.network.sn_client import SNClient
        with SNClient(target, tls, timeout_s=5, retry_s=0) as sn:
            while not self._stop.wait(1.0):
                try:
                    sn.view(rounds=10, events=1)  # as `swarm status --watch` asks
                    self.snapshots += 1
                except Exception:  # noqa: BLE001 - starting or stopping
                    pass

    def stop(self):
        self._stop.set()
        for t in self._threads:
            t.join(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--model-mb", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--scrape-s", type=float, default=1.0)
    args = parser.parse_args()
    model_bytes = int(args.model_mb * (1 << 20))
    results: dict[str, list[float]] = {s: [] for s in SETUPS}
    cpu: dict[str, list[float]] = {s: [] for s in SETUPS}
    counts: dict[str, list[int]] = {s: [0, 0] for s in SETUPS}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ws = Workspace(tmp / "ws", args.nodes)
        tls = ws.material("swci", 1)
        for repeat in range(args.repeats):
            for setup in SETUPS:
                sn_extra: tuple[str, ...] = ()
                ports: list[int] = []
                if setup != "off":
                    ports = [free_port() for _ in range(args.nodes + 1)]
                    sn_extra = ("--metrics-port", str(ports[0]))

                def sl_extra(i, setup=setup, ports=ports):
                    flags = ["--progress", "auto" if setup == "watched" else "off"]
                    if ports:
                        flags += ["--metrics-port", str(ports[i + 1])]
                    return flags

                watchers: list[Watcher] = []

                def on_sn(sentinel, setup=setup, ports=ports):
                    if ports:
                        watchers.append(Watcher(ports, args.scrape_s, sentinel.target
                                                if setup == "watched" else None, tls))
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                try:
                    rounds = run_swarm(ws, tmp, args.nodes, model_bytes, args.rounds,
                                       sn_extra=sn_extra, sl_extra=sl_extra,
                                       tag=f"-{setup}-{repeat}", on_sn=on_sn)
                finally:
                    for watcher in watchers:
                        watcher.stop()
                        counts[setup][0] += watcher.scrapes
                        counts[setup][1] += watcher.snapshots
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[setup].append(after.ru_utime + after.ru_stime
                                  - before.ru_utime - before.ru_stime)
                results[setup].append(summarise(rounds)["round"])
                print(f"repeat {repeat + 1}, {setup}: median round "
                      f"{results[setup][-1] * 1000:.1f} ms", file=sys.stderr)

    base = statistics.median(results["off"])
    table = Table(title=f"Cost of watching: N={args.nodes}, model {args.model_mb:g} MB, "
                        f"{args.rounds} rounds x {args.repeats} runs per set-up")
    cpu_base = statistics.median(cpu["off"])
    for column in ("set-up", "median round (ms)", "runs (ms)", "ratio to off",
                   "CPU per run (s)", "CPU ratio", "scrapes", "snapshots"):
        table.add_column(column, justify="left" if column == "set-up" else "right")
    for setup in SETUPS:
        median = statistics.median(results[setup])
        table.add_row(setup, f"{median * 1000:.1f}",
                      ", ".join(f"{v * 1000:.0f}" for v in results[setup]),
                      f"{median / base:.3f}", f"{statistics.median(cpu[setup]):.1f}",
                      f"{statistics.median(cpu[setup]) / cpu_base:.3f}",
                      str(counts[setup][0]), str(counts[setup][1]))
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
