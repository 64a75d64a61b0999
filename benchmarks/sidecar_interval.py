"""The round as the training program sees it, against the SL node's own round.

For N SL nodes (real run-sl processes with synthetic sidecars, one sentinel SN on the
embedded ledger, mTLS on loopback) and a model of M bytes, per configuration:
- SL round: the SL node's round, from its RoundOutcome records (check-in to seal as
  the last node to check in sees it, plus the slowest node's exchange and merge; median over rounds),
- interval: time between merged models loaded at the sidecar (median over rounds and
  nodes), and interval / SL round (the goal is at most 1.2),
- the hand-off's split, from the sidecar's records (benchmarks/synthetic_sidecar.py
  writes MODEL_DIR/handoff.jsonl; the SL node reports its side in each SyncResult):
  flatten (get_weights, flatten, NaN/Inf scan at the sidecar), up (the update from the
  sidecar's call to the SL node's round: transfer or region, and the node's NaN/Inf
  scan), node-other (the SL node's call less its logged round: the digest, SN status
  and the commit), down (merged weights back: transfer or region), load (NaN/Inf scan,
  unflatten, set_weights at the sidecar; also as the sidecar's CPU time), and the
  sidecar's CPU seconds per sync (on a shared machine, wall times stretch with the
  load; CPU time much less),
- the path the hand-off took (region: shared memory; socket: gRPC chunks).

    .venv/bin/python benchmarks/sidecar_interval.py [--nodes 2 4] [--sizes-mb 1 45]
        [--rounds 6] [--paths region socket]

`--paths socket` sets SWARM_SHM=off in the sidecars (the socket path only). `--echo`
measures the hand-off alone: one sidecar and a local service whose "node" computes
the digest and answers a fixed merged vector at once (no swarm, no SN).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from swarm.lab.launch import LocalSwarm  # noqa: E402

RUN_TIMEOUT_S = 900.0  # a swarm that stalls (e.g. a round never sealed) fails its row


def run_swarm(certs: Path, tmp: Path, nodes: int, model_bytes: int, rounds: int,
              path: str) -> tuple[dict, list[list[dict]]]:
    """One swarm run: ({round: {node: (total, control, exchange)}}, records per node),
    the rounds from each SL node's RoundOutcome records."""
    tag = f"{path}-{nodes}-{model_bytes}"
    env = {"MIN_PEERS": nodes, "ROUNDS": rounds, "MODEL_BYTES": model_bytes}
    if path == "socket":
        env["SWARM_SHM"] = "off"
    with LocalSwarm(tmp / tag, nodes, [sys.executable, str(HERE / "synthetic_sidecar.py")],
                    env=env, certs=certs, sn_args=["--round-grace", "5"],
                    sl_args=["--peer-timeout", "30"]) as swarm:
        try:
            codes = swarm.wait(RUN_TIMEOUT_S)
        except TimeoutError as error:
            raise RuntimeError(f"{error}; an SL node's last lines:\n{swarm.tail(0, 10)}") from None
        failed = [i for i, code in enumerate(codes) if code != 0]
        if failed:
            raise RuntimeError("an SL node failed:\n" + swarm.tail(failed[0], 30))
        outcomes = [swarm.outcomes(i) for i in range(nodes)]
        model_dirs = [swarm.model_dir(i) for i in range(nodes)]
    per_round: dict[int, dict[int, tuple]] = {}
    for node, node_outcomes in enumerate(outcomes):
        for outcome in node_outcomes:
            if outcome["status"] == "merged":
                control, exchange = outcome["control_s"], outcome["exchange_s"]
                per_round.setdefault(outcome["round"], {})[node] = (
                    control + exchange, control, exchange)
    records = []
    for model_dir in model_dirs:
        text = (model_dir / "handoff.jsonl").read_text(encoding="utf-8")
        records.append([json.loads(line) for line in text.splitlines() if line])
    return per_round, records


def summarise(per_round: dict, records: list[list[dict]], nodes: int) -> dict:
    """Medians over the rounds after the first (which waits for start-up)."""
    sl_round = {}
    for r, by_node in per_round.items():
        if len(by_node) == nodes:
            sl_round[r] = (min(v[1] for v in by_node.values())
                           + max(v[2] for v in by_node.values()))
    intervals, parts, paths = [], {k: [] for k in
                                   ("flatten", "up", "node_other", "down", "load", "load_cpu",
                                    "cpu")}, set()
    for node_records in records:
        by_round = {rec["round"]: rec for rec in node_records}
        for r, rec in by_round.items():
            prev = by_round.get(r - 1)
            h = rec["handoff"]
            if prev is None or r not in sl_round or not h:
                continue
            own = per_round[r].get(records.index(node_records))
            intervals.append(rec["loaded"] - prev["loaded"])
            paths.add(h["path"])
            n = h["node"]
            parts["flatten"].append(h["started"] - rec["before"])
            parts["load"].append(rec["loaded"] - h["done"])
            parts["cpu"].append(rec["cpu_s"])
            parts["load_cpu"].append(rec["cpu_now"] - h["done_cpu"])
            parts["down"].append(h["done"] - h["answered"] + n["write_s"])
            call = h["answered"] - h["started"]
            parts["up"].append(call - n["node_s"] - n["write_s"])
            if own:
                parts["node_other"].append(n["node_s"] - own[0])
    rounds = [sl_round[r] for r in sorted(sl_round)[1:]]
    med = {k: statistics.median(v) if v else float("nan") for k, v in parts.items()}
    return {"sl_round": statistics.median(rounds), "interval": statistics.median(intervals),
            "n": len(rounds), "paths": "/".join(sorted(paths)), **med}


# ---- --echo: the hand-off alone ----------------------------------------------------

class EchoNode:
    """Stands in for SwarmLearningNode behind the real local service: digests the
    update as a round would, and answers a fixed "merged" vector at once."""

    def __init__(self):
        self.layout = None
        self.merged = None

    def hello(self, config_json, layout_json, framework):
        import numpy as np

        from swarm.protos import local_api_pb2 as lpb
        from swarm.tensors import Layout
        self.layout = Layout.from_json(layout_json)
        self.merged = np.full(self.layout.size, 0.5, dtype=self.layout.wire)
        return lpb.HelloReply(node_id="echo", min_peers=1)

    def _answer(self, flat):
        from types import SimpleNamespace

        from swarm.protos import local_api_pb2 as lpb
        from swarm.tensors import weights_digest
        digest, _ = weights_digest(self.layout, flat)
        return (lpb.SyncResult(round=1, participants=1, merged_digest=digest,
                               total_bytes=self.layout.nbytes),
                SimpleNamespace(flat=self.merged, layout=self.layout))

    def sync(self, flat, weight, begin):
        return self._answer(flat)

    def finish(self, flat, weight, mode):
        return self._answer(flat)


def serve_echo(socket_path: str) -> None:
    from concurrent import futures

    import grpc

    from sl_node.local_service import SwarmLearningLocalServicer
    server = grpc.server(futures.ThreadPoolExecutor(4), options=[
        ("grpc.max_receive_message_length", 8 << 20)])
    SwarmLearningLocalServicer(EchoNode()).add_to_server(server)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def echo(sizes_mb: list[float], repeats: int, paths: list[str]) -> None:
    import numpy as np

    from swarm.callback import LocalChannel, parse_params
    from swarm.tensors import Layout
    table = Table(title=f"Hand-off alone: sidecar <-> local service with an echo node "
                        f"({os.cpu_count()} CPU cores; medians of {repeats} syncs)")
    for column in ("model", "path", "call", "up", "node (digest)", "down", "load"):
        table.add_column(column, justify="right")
    for size_mb in sizes_mb:
        for path in paths:
            with tempfile.TemporaryDirectory() as tmp:
                sock = f"{tmp}/echo.sock"
                server = subprocess.Popen([sys.executable, __file__, "--echo-server", sock],
                                          cwd=REPO, stdout=subprocess.PIPE, text=True)
                old = os.environ.get("SWARM_SHM")
                os.environ["SWARM_SHM"] = "off" if path == "socket" else "on"
                try:
                    server.stdout.readline()
                    w = {"w": np.random.default_rng(0).standard_normal(
                        int(size_mb * 1e6) // 4).astype(np.float32)}
                    layout = Layout.from_weights(w)
                    rows = []
                    with LocalChannel(f"unix://{sock}") as channel:
                        channel.hello(parse_params(syncFrequency=1, minPeers=1), layout, "numpy")
                        for _ in range(repeats + 1):
                            flat = layout.flatten(w)
                            _, merged = channel.sync(flat, 1)
                            h = channel.last_handoff
                            layout.unflatten(merged)
                            loaded = time.perf_counter()
                            n = h.node
                            rows.append((h.done - h.started,
                                         h.answered - h.started - n["node_s"] - n["write_s"],
                                         n["node_s"], h.done - h.answered + n["write_s"],
                                         loaded - h.done, h.path))
                    rows = rows[1:]
                finally:
                    if old is None:
                        os.environ.pop("SWARM_SHM", None)
                    else:
                        os.environ["SWARM_SHM"] = old
                    server.kill()
                    server.wait()
            med = [statistics.median(r[i] for r in rows) * 1000 for i in range(5)]
            table.add_row(f"{size_mb:g} MB", rows[-1][5],
                          *(f"{m:.1f} ms" for m in med))
    Console(width=150).print(table)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--echo-server":
        serve_echo(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 45])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--paths", nargs="+", choices=["region", "socket"],
                        default=["region", "socket"],
                        help="hand-off paths to measure (region: shared memory when "
                             "available; socket: SWARM_SHM=off)")
    parser.add_argument("--echo", action="store_true",
                        help="the hand-off alone, against an echo node (no swarm)")
    args = parser.parse_args()
    if args.echo:
        echo(args.sizes_mb, args.rounds, args.paths)
        return 0
    table = Table(title=f"Rounds as the sidecar sees them, loopback with mTLS "
                        f"({os.cpu_count()} CPU cores, load average at start "
                        f"{os.getloadavg()[0]:.1f}; medians over rounds)")
    for column in ("N", "model", "path", "SL round", "interval", "interval/round",
                   "flatten", "up", "node-other", "down", "load", "load CPU", "sidecar CPU",
                   "rounds"):
        table.add_column(column, justify="right")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        certs = tmp / "workspace"  # one gen-cert site per node, made once for every run
        for size_mb in args.sizes_mb:
            model_bytes = int(size_mb * 1e6) // 4 * 4
            for nodes in args.nodes:
                for path in args.paths:
                    try:
                        per_round, records = run_swarm(certs, tmp, nodes, model_bytes,
                                                       args.rounds, path)
                    except RuntimeError as error:
                        print(f"N={nodes}, {size_mb:g} MB, {path}: {error}", file=sys.stderr)
                        table.add_row(str(nodes), f"{size_mb:g} MB", path, "failed",
                                      *[""] * 10)
                        continue
                    s = summarise(per_round, records, nodes)
                    ms = {k: f"{s[k] * 1000:.0f} ms" for k in ("sl_round", "interval", "flatten",
                                                              "up", "node_other", "down",
                                                              "load", "load_cpu", "cpu")}
                    table.add_row(str(nodes), f"{size_mb:g} MB", s["paths"], ms["sl_round"],
                                  ms["interval"], f"{s['interval'] / s['sl_round']:.2f}",
                                  ms["flatten"], ms["up"], ms["node_other"], ms["down"],
                                  ms["load"], ms["load_cpu"], ms["cpu"], str(s["n"]))
                    print(f"done: N={nodes}, {size_mb:g} MB, {path}", file=sys.stderr,
                          flush=True)
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
