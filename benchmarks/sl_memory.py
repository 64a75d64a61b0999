"""Peak memory of an SL node (and its sidecar) per model size, for each merge method.

For N SL nodes (real run-sl processes, one sentinel SN, mTLS on loopback) and a model
of M bytes, runs a few sync rounds and reads each process's peak resident set
(VmHWM in /proc, Linux) and its resident set once registered, before any model
exists. Prints, per method: the SL node's peak ÷ model size, and its growth over
that idle size ÷ model size; "round extra", the growth less what the node holds
between rounds anyway (the update in the region it shares with the sidecar, and
the held merged model), i.e. what a round adds: the bound is 3 model sizes; and the
sidecar's peak ÷ model.

    .venv/bin/python benchmarks/sl_memory.py [--nodes 4 8] [--size-mb 45] [--rounds 4]
        [--methods mean trimmedmean coordmedian geomedian krum centeredclipping]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from swarm.lab.launch import LocalSwarm  # noqa: E402
from swarm.merging import MERGE_METHODS  # noqa: E402

# Held between rounds whatever the merge: the update (in the region shared with the
# sidecar) and the latest merged model.
HELD_BETWEEN_ROUNDS = 2
ROUND_EXTRA_BOUND = 3.0
RUN_TIMEOUT_S = 1800.0


def _kib(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in
                Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


class Memory:
    """Samples a LocalSwarm's run-sl processes and their sidecar children: per node the
    peak RSS (VmHWM, a high-water mark, so sampling every 0.1 s misses nothing but the
    last moments), the sidecar's peak, and the RSS once registered (before any model).
    Pass `on_line` to the LocalSwarm and `tick` to its wait()."""

    def __init__(self, swarm: LocalSwarm | None = None):
        self.swarm = swarm
        self.peak: dict[int, int] = {}
        self.sidecar_peak: dict[int, int] = {}
        self.idle: dict[int, int] = {}

    def on_line(self, name: str, line: str) -> None:
        # name "sl-I" (I from 1); the reader thread may run before swarm.sls is set
        if name.startswith("sl-") and "registered as" in line and self.swarm is not None:
            i = int(name[3:]) - 1
            if i < len(self.swarm.sls) and i not in self.idle:
                self.idle[i] = _kib(self.swarm.sls[i].proc.pid, "VmRSS")

    def tick(self) -> None:
        for i, sl in enumerate(self.swarm.sls):
            if sl.poll() is not None:
                continue
            self.peak[i] = max(self.peak.get(i, 0), _kib(sl.proc.pid, "VmHWM"))
            for child in _children(sl.proc.pid):
                self.sidecar_peak[i] = max(self.sidecar_peak.get(i, 0), _kib(child, "VmHWM"))


def run(certs: Path, tmp: Path, nodes: int, model_bytes: int, rounds: int,
        method: str) -> Memory:
    memory = Memory()
    swarm = LocalSwarm(tmp / f"{nodes}-{method}", nodes, [sys.executable, __file__, "--sidecar"],
                       env={"MIN_PEERS": nodes, "ROUNDS": rounds, "MODEL_BYTES": model_bytes,
                            "MERGE_METHOD": method},
                       certs=certs, sn_args=["--round-grace", "5", "--liveness-timeout", "60"],
                       sl_args=["--peer-timeout", "30"], on_line=memory.on_line)
    memory.swarm = swarm
    with swarm:
        swarm.wait_ok(RUN_TIMEOUT_S, tick=memory.tick)
    return memory


def sidecar() -> int:
    """The ML program: random float32 weights of MODEL_BYTES, ROUNDS syncs."""
    import numpy as np

    from swarm.callback import SwarmCallback

    rng = np.random.default_rng(int(os.environ["NODE_INDEX"]))
    weights = {"w": rng.standard_normal(int(os.environ["MODEL_BYTES"]) // 4).astype(np.float32)}

    def set_weights(new):
        weights["w"] = np.array(new["w"], dtype=np.float32)

    callback = SwarmCallback(lambda: {"w": weights["w"]}, set_weights, syncFrequency=1,
                             minPeers=int(os.environ["MIN_PEERS"]),
                             mergeMethod=os.environ.get("MERGE_METHOD", "mean"),
                             checkinModelOnTrainEnd="inactive")
    callback.on_train_begin()
    for _ in range(int(os.environ["ROUNDS"])):
        weights["w"] += np.float32(0.01)
        callback.on_batch_end()
        if callback.swarm_done:
            break
    callback.on_train_end()
    return 0


def main() -> int:
    if sys.argv[1:2] == ["--sidecar"]:
        return sidecar()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--size-mb", type=float, default=45)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=list(MERGE_METHODS))
    args = parser.parse_args()
    model_bytes = int(args.size_mb * 1e6) // 4 * 4
    table = Table(title=f"Peak memory per SL node, {args.size_mb:g} MB model "
                        f"(max over nodes; ÷ model size)")
    for column in ("N", "merge", "SL peak", "SL idle", "SL growth", "round extra",
                   "sidecar peak"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        certs = Path(tmp) / "workspace"  # one gen-cert site per node, made once for every run
        for nodes in args.nodes:
            for method in args.methods:
                try:
                    memory = run(certs, Path(tmp), nodes, model_bytes, args.rounds, method)
                except RuntimeError as error:  # one failed run costs its row, not the table
                    print(f"N={nodes} {method}: {error}", file=sys.stderr, flush=True)
                    table.add_row(str(nodes), method, "failed", *[""] * 4)
                    continue
                peak = max(memory.peak.values())
                idle = max(memory.idle.values())
                growth = max(memory.peak[i] - memory.idle.get(i, 0) for i in memory.peak)
                side = max(memory.sidecar_peak.values())
                extra = growth / model_bytes - HELD_BETWEEN_ROUNDS
                table.add_row(str(nodes), method, f"{peak / model_bytes:.1f}×",
                              f"{idle / model_bytes:.1f}×", f"{growth / model_bytes:.1f}×",
                              f"{extra:.1f}×" + ("" if extra <= ROUND_EXTRA_BOUND
                                                 else " (over 3)"),
                              f"{side / model_bytes:.1f}×")
                print(f"done: N={nodes} {method}: SL growth {growth / model_bytes:.1f}×, "
                      f"round extra {extra:.1f}×, sidecar peak {side / model_bytes:.1f}×",
                      file=sys.stderr, flush=True)
    Console(width=120).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
