"""Sync-round figures of the swarm, printed as a table.

For N SL nodes (real run-sl processes with synthetic sidecars, one sentinel SN on
the embedded ledger, mTLS on loopback, started by swarm.lab.launch.LocalSwarm) and a
model of M bytes, per round:
- round time (median over rounds of the slowest node's),
- control: check-in to seal, as the last node to check in sees it (it waits for no
  one else), and exchange: the sharded exchange and merge (slowest node),
- interval: the time between merged models loaded at the sidecar (its handoff.jsonl;
  median over rounds and nodes),
- bytes sent and received per node per round divided by the model size,
- peak resident set of an SL node and of a sidecar (VmHWM, max over nodes) ÷ model size,
- for the large model: the round time divided by the time the same bytes (a node's
  2·(N−1)/N model sizes) take over one mTLS gRPC stream between two processes.

    .venv/bin/python benchmarks/sl_rounds.py [--nodes 2 4 8] [--sizes-mb 1 45] [--rounds 6]

With --link-mbit R (root only) every SL node runs on its own simulated host: a
network namespace whose link to the LAN (a bridge; the SN stays in the root
namespace) carries R Mbit/s each way, as separate machines would have. The one-stream
baseline then crosses such a link too. All processes still share this machine's CPUs.
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
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import grpc
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from simulated_hosts import SimulatedHosts  # noqa: E402
from sl_memory import Memory  # noqa: E402

from swarm.lab.launch import LocalSwarm, Site, free_port, make_workspace  # noqa: E402

STREAM_METHOD = "/bench.Stream/Push"
RUN_TIMEOUT_S = 1800.0


@dataclass
class SwarmRun:
    """One swarm run: `rounds` per round {node: (total, control, exchange, sent, recv)}
    (complete rounds after the first); `intervals`, the seconds between merged models
    loaded at each sidecar; the memory sampled (peak RSS per node and sidecar)."""

    rounds: list[dict]
    intervals: list[float] = field(default_factory=list)
    memory: Memory | None = None


def run_swarm(certs, tmp: Path, nodes: int, model_bytes: int, rounds: int,
              hosts: SimulatedHosts | None = None, sn_extra: tuple[str, ...] = (),
              sl_extra=lambda node: [], tag: str = "", on_sn=lambda sn: None) -> list[dict]:
    """One swarm run; returns per round: [{node: (total, control, exchange, sent, recv)}]."""
    return measure_swarm(certs, tmp, nodes, model_bytes, rounds, hosts, sn_extra, sl_extra,
                         tag, on_sn).rounds


def measure_swarm(certs, tmp: Path, nodes: int, model_bytes: int, rounds: int,
                  hosts: SimulatedHosts | None = None, sn_extra: tuple[str, ...] = (),
                  sl_extra=lambda node: [], tag: str = "", on_sn=lambda sn: None) -> SwarmRun:
    """One swarm run on the launcher (swarm.lab.launch.LocalSwarm). `certs`: the folder
    of its gen-cert sites, or a Workspace (sn_control_plane.py; all under one CA);
    `sn_extra` and `sl_extra(node)` are more flags for run-sn and each run-sl; `on_sn`
    is called with the sentinel (its .target) once the swarm has started."""
    sites = None
    if not isinstance(certs, Path):  # a Workspace: its certificates, node i with index i+1
        sites, certs = [certs.site(i + 1) for i in range(nodes)], tmp / "workspace"
    sn_ip = hosts.root_ip if hosts else "127.0.0.1"

    def node_args(i: int) -> list[str]:
        where = ["--host-ip", hosts.ip(i), "--sn-ip", sn_ip] if hosts else []
        return [*where, *sl_extra(i)]

    memory = Memory()
    swarm = LocalSwarm(tmp / f"{nodes}-{model_bytes}{tag}", nodes,
                       [sys.executable, str(HERE / "synthetic_sidecar.py")],
                       env={"MIN_PEERS": nodes, "ROUNDS": rounds, "MODEL_BYTES": model_bytes},
                       certs=certs,
                       sn_args=["--round-grace", "5", "--host-ip", sn_ip, *sn_extra],
                       sl_args=["--peer-timeout", "30",
                                "--log-level", os.environ.get("SL_LOG_LEVEL", "INFO")],
                       node_args=node_args, wrap=hosts.wrap if hosts else None,
                       on_line=memory.on_line, sites=sites)
    memory.swarm = swarm
    with swarm:
        on_sn(SimpleNamespace(target=f"{sn_ip}:{swarm.sn_api_port}", api_port=swarm.sn_api_port,
                              proc=swarm.sn))
        swarm.wait_ok(RUN_TIMEOUT_S, tick=memory.tick)
        if os.environ.get("SL_LOG_LEVEL") == "DEBUG":  # the exchange's phase timings
            for node, sl in enumerate(swarm.sls):
                sys.stderr.writelines(f"node {node}: {line}\n" for line in sl.lines
                                      if "phases" in line)
        outcomes = [swarm.outcomes(i) for i in range(nodes)]
        handoffs = [swarm.model_dir(i) / "handoff.jsonl" for i in range(nodes)]
    per_round: dict[int, dict[int, tuple]] = {}
    for node, node_outcomes in enumerate(outcomes):
        for r in node_outcomes:
            if r["status"] == "merged":
                size = r["model_bytes"] or 1
                per_round.setdefault(r["round"], {})[node] = (
                    r["control_s"] + r["exchange_s"], r["control_s"], r["exchange_s"],
                    r["bytes_sent"] / size, r["bytes_received"] / size)
    complete = sorted(r for r in per_round if len(per_round[r]) == nodes)
    measured = set(complete[1:])  # the first (on_train_begin) round also waits for start-up
    intervals = []
    for path in handoffs:  # benchmarks/synthetic_sidecar.py's records
        loaded = {rec["round"]: rec["loaded"] for rec in
                  map(json.loads, path.read_text(encoding="utf-8").splitlines())}
        intervals += [loaded[r] - loaded[r - 1] for r in measured
                      if r in loaded and r - 1 in loaded]
    return SwarmRun([per_round[r] for r in complete[1:]], intervals, memory)


def summarise(rounds: list[dict]) -> dict:
    return {
        "round": statistics.median(max(v[0] for v in r.values()) for r in rounds),
        "control": statistics.median(min(v[1] for v in r.values()) for r in rounds),
        "exchange": statistics.median(max(v[2] for v in r.values()) for r in rounds),
        "sent": max(max(v[3] for v in r.values()) for r in rounds),
        "received": max(max(v[4] for v in r.values()) for r in rounds),
        "n": len(rounds),
    }


def serve_stream(port: int, cert: str, key: str, capath: str, ip: str) -> None:
    """A one-method server that swallows a client stream (the baseline's far end)."""
    from swarm.identity import load_tls
    tls = load_tls(cert, key, capath)

    def push(requests, context):
        total = sum(len(r) for r in requests)
        return str(total).encode()

    server = grpc.server(futures.ThreadPoolExecutor(4),
                         options=[("grpc.max_receive_message_length", 8 << 20)])
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "bench.Stream", {"Push": grpc.stream_unary_rpc_method_handler(push)})])
    server.add_secure_port(f"{ip}:{port}", tls.server_credentials())
    server.start()
    print("ready", flush=True)
    server.wait_for_termination()


def stream_seconds(sites: list[Site], nbytes: int, hosts: SimulatedHosts | None = None,
                   repeats: int = 3) -> float:
    """Median time to push nbytes in 1 MiB messages over one mTLS gRPC stream (from
    the root namespace to host 0's, across its shaped link, with --link-mbit)."""
    port = free_port()
    ip = hosts.ip(0) if hosts else "127.0.0.1"
    args = sites[1].tls_args("sl")
    argv = [sys.executable, __file__, "--stream-server", str(port), args[1], args[3], args[5], ip]
    server = subprocess.Popen(hosts.wrap(0, argv) if hosts else argv, cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        channel = sites[0].material("sl").secure_channel(f"{ip}:{port}", "sl")
        push = channel.stream_unary(STREAM_METHOD)
        chunk = bytes(1 << 20)
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            push(iter([chunk] * (nbytes // len(chunk)) + [bytes(nbytes % len(chunk))]),
                 timeout=600)
            times.append(time.perf_counter() - started)
        channel.close()
        return statistics.median(times)
    finally:
        server.kill()
        server.wait()


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--stream-server":
        serve_stream(int(sys.argv[2]), *sys.argv[3:7])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[1, 45])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--link-mbit", type=float, metavar="R",
                        help="each SL node on its own simulated host with an R Mbit/s link "
                             "(network namespaces; root only)")
    args = parser.parse_args()
    where = (f"simulated hosts with {args.link_mbit:g} Mbit/s links" if args.link_mbit
             else "loopback")
    table = Table(title=f"Sync rounds on {where} with mTLS ({os.cpu_count()} CPU cores, "
                        f"load average at start {os.getloadavg()[0]:.1f}; medians over rounds)")
    for column in ("N", "model", "round", "control", "exchange", "interval", "sent/model",
                   "received/model", "SL peak", "sidecar peak", "vs one stream", "rounds"):
        table.add_column(column, justify="right")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        hosts = (stack.enter_context(SimulatedHosts(max(args.nodes), args.link_mbit))
                 if args.link_mbit else None)
        certs = tmp / "workspace"  # one gen-cert site per node, made once for every run
        sites = make_workspace(certs, max(*args.nodes, 2))
        for size_mb in args.sizes_mb:
            model_bytes = int(size_mb * 1e6) // 4 * 4
            for nodes in args.nodes:
                run = measure_swarm(certs, tmp, nodes, model_bytes, args.rounds, hosts)
                s = summarise(run.rounds)
                versus = ""
                if size_mb >= 10:
                    baseline = stream_seconds(sites, int(2 * (nodes - 1) / nodes * model_bytes),
                                              hosts)
                    versus = f"{s['round'] / baseline:.2f}x ({baseline * 1000:.0f} ms)"
                interval = (f"{statistics.median(run.intervals) * 1000:.0f} ms"
                            if run.intervals else "")
                mem = run.memory
                sl_peak = max(mem.peak.values(), default=0) / model_bytes
                side_peak = max(mem.sidecar_peak.values(), default=0) / model_bytes
                table.add_row(str(nodes), f"{size_mb:g} MB", f"{s['round'] * 1000:.0f} ms",
                              f"{s['control'] * 1000:.0f} ms", f"{s['exchange'] * 1000:.0f} ms",
                              interval, f"{s['sent']:.2f}", f"{s['received']:.2f}",
                              f"{sl_peak:.1f}×", f"{side_peak:.1f}×", versus, str(s["n"]))
                print(f"done: N={nodes}, {size_mb:g} MB", file=sys.stderr, flush=True)
    Console(width=180).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
