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
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from sn_control_plane import SN, Workspace, free_port  # noqa: E402

from swarm.merging import MERGE_METHODS  # noqa: E402

# Held between rounds whatever the merge: the update (in the region shared with the
# sidecar) and the latest merged model.
HELD_BETWEEN_ROUNDS = 2
ROUND_EXTRA_BOUND = 3.0


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


class Watch:
    """Samples a run-sl process and its sidecar child: peak RSS, and RSS once registered."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.peak = self.sidecar_peak = self.idle = 0
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._sample, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            if not self.idle and "registered as" in line:
                self.idle = _kib(self.proc.pid, "VmRSS")

    def _sample(self) -> None:
        while self.proc.poll() is None:
            self.peak = max(self.peak, _kib(self.proc.pid, "VmHWM"))
            for child in _children(self.proc.pid):
                self.sidecar_peak = max(self.sidecar_peak, _kib(child, "VmHWM"))
            time.sleep(0.05)


def run(ws: Workspace, tmp: Path, nodes: int, model_bytes: int, rounds: int,
        method: str) -> list[Watch]:
    sentinel = SN(ws, 1, tmp / f"sn-{nodes}-{method}", "--sentinel", "--round-grace", "5",
                  "--liveness-timeout", "60")
    watches = []
    try:
        for i in range(nodes):
            argv = [sys.executable, "-m", "sl_node.cli", *ws.tls_args("sl", i + 1),
                    "--host-ip", "127.0.0.1", "--sn-ip", "127.0.0.1",
                    "--sn-api-port", str(sentinel.api_port), "--sl-fs-port", str(free_port()),
                    "--data-dir", str(tmp / f"sl-{nodes}-{method}-{i}"),
                    "--peer-timeout", "30", "--ml-entrypoint", sys.executable,
                    "--ml-cmd", f"{__file__} --sidecar"]
            for key, value in {"NODE_INDEX": i, "MIN_PEERS": nodes, "ROUNDS": rounds,
                               "MODEL_BYTES": model_bytes, "MERGE_METHOD": method,
                               "MODEL_DIR": tmp / f"model-{nodes}-{method}-{i}"}.items():
                argv += ["--ml-e", f"{key}={value}"]
            proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            watches.append(Watch(proc))
        for watch in watches:
            if watch.proc.wait(1800) != 0:
                raise RuntimeError("an SL node failed:\n" + "".join(watch.lines[-30:]))
    finally:
        for watch in watches:
            if watch.proc.poll() is None:
                watch.proc.kill()
        sentinel.stop()
    return watches


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
        ws = Workspace(Path(tmp) / "ws", max(args.nodes))
        for nodes in args.nodes:
            for method in args.methods:
                try:
                    watches = run(ws, Path(tmp), nodes, model_bytes, args.rounds, method)
                except RuntimeError as error:  # one failed run costs its row, not the table
                    print(f"N={nodes} {method}: {error}", file=sys.stderr, flush=True)
                    table.add_row(str(nodes), method, "failed", *[""] * 4)
                    continue
                peak = max(w.peak for w in watches)
                idle = max(w.idle for w in watches)
                growth = max(w.peak - w.idle for w in watches)
                side = max(w.sidecar_peak for w in watches)
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
