"""Sync-round figures of the swarm, printed as a table.

For N SL nodes (real run-sl processes with synthetic sidecars, one sentinel SN on
the embedded ledger, mTLS on loopback) and a model of M bytes, per round:
- round time (median over rounds of the slowest node's),
- control: check-in to seal, as the last node to check in sees it (it waits for no
  one else), and exchange: the sharded exchange and merge (slowest node),
- bytes sent and received per node per round divided by the model size,
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
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from simulated_hosts import SimulatedHosts  # noqa: E402
from sl_node.round_driver import OUTCOMES_FILE, read_outcomes  # noqa: E402
from sn_control_plane import SN, Workspace, free_port  # noqa: E402

STREAM_METHOD = "/bench.Stream/Push"


def run_swarm(ws: Workspace, tmp: Path, nodes: int, model_bytes: int, rounds: int,
              hosts: SimulatedHosts | None = None, sn_extra: tuple[str, ...] = (),
              sl_extra=lambda node: [], tag: str = "", on_sn=lambda sn: None) -> list[dict]:
    """One swarm run; returns per round: [{node: (total, control, exchange, sent, recv)}].
    `sn_extra` and `sl_extra(node)` are more flags for run-sn and each run-sl; `on_sn`
    is called with the sentinel once it is ready."""
    sn_ip = hosts.root_ip if hosts else "127.0.0.1"
    sentinel = SN(ws, 1, tmp / f"sn-{nodes}-{model_bytes}{tag}", "--sentinel", "--round-grace",
                  "5", "--host-ip", sn_ip, *sn_extra)
    on_sn(sentinel)
    procs, outputs = [], []
    try:
        for i in range(nodes):
            argv = [sys.executable, "-m", "sl_node.cli", *ws.tls_args("sl", i + 1),
                    "--host-ip", hosts.ip(i) if hosts else "127.0.0.1", "--sn-ip", sn_ip,
                    "--sn-api-port", str(sentinel.api_port), "--sl-fs-port", str(free_port()),
                    "--data-dir", str(tmp / f"sl-{nodes}-{model_bytes}{tag}-{i}"), *sl_extra(i),
                    "--peer-timeout", "30", "--log-level", os.environ.get("SL_LOG_LEVEL", "INFO"),
                    "--ml-entrypoint", sys.executable,
                    "--ml-cmd", str(HERE / "synthetic_sidecar.py")]
            for key, value in {"NODE_INDEX": i, "MIN_PEERS": nodes, "ROUNDS": rounds,
                               "MODEL_BYTES": model_bytes,
                               "MODEL_DIR": tmp / f"model-{nodes}-{model_bytes}{tag}-{i}"}.items():
                argv += ["--ml-e", f"{key}={value}"]
            if hosts:
                argv = hosts.wrap(i, argv)
            proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True,
                                    env={**os.environ, "PYTHONUNBUFFERED": "1"})
            lines: list[str] = []
            threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout),
                             daemon=True).start()
            procs.append(proc)
            outputs.append(lines)
        for proc in procs:
            if proc.wait(1800) != 0:
                raise RuntimeError("an SL node failed:\n" + "".join(outputs[procs.index(proc)][-30:]))
        time.sleep(0.5)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        sentinel.stop()
    if os.environ.get("SL_LOG_LEVEL") == "DEBUG":  # the exchange's phase timings
        for node, lines in enumerate(outputs):
            sys.stderr.writelines(f"node {node}: {line}" for line in lines if "phases" in line)
    per_round: dict[int, dict[int, tuple]] = {}
    for node in range(nodes):
        for r in read_outcomes(tmp / f"sl-{nodes}-{model_bytes}{tag}-{node}" / OUTCOMES_FILE):
            if r["status"] == "merged":
                size = r["model_bytes"] or 1
                per_round.setdefault(r["round"], {})[node] = (
                    r["control_s"] + r["exchange_s"], r["control_s"], r["exchange_s"],
                    r["bytes_sent"] / size, r["bytes_received"] / size)
    complete = [per_round[r] for r in sorted(per_round) if len(per_round[r]) == nodes]
    return complete[1:]  # the first (on_train_begin) round also waits for start-up


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


def stream_seconds(ws: Workspace, nbytes: int, hosts: SimulatedHosts | None = None,
                   repeats: int = 3) -> float:
    """Median time to push nbytes in 1 MiB messages over one mTLS gRPC stream (from
    the root namespace to host 0's, across its shaped link, with --link-mbit)."""
    port = free_port()
    ip = hosts.ip(0) if hosts else "127.0.0.1"
    args = ws.tls_args("sl", 2)
    argv = [sys.executable, __file__, "--stream-server", str(port), args[1], args[3], args[5], ip]
    server = subprocess.Popen(hosts.wrap(0, argv) if hosts else argv, cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    try:
        server.stdout.readline()
        channel = ws.material("sl", 1).secure_channel(f"{ip}:{port}", "sl")
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
    table = Table(title=f"Sync rounds on {where} with mTLS ({os.cpu_count()} CPU cores; "
                        f"medians over rounds)")
    for column in ("N", "model", "round", "control", "exchange", "sent/model",
                   "received/model", "vs one stream", "rounds"):
        table.add_column(column, justify="right")
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        hosts = (stack.enter_context(SimulatedHosts(max(args.nodes), args.link_mbit))
                 if args.link_mbit else None)
        ws = Workspace(tmp / "ws", max(args.nodes))
        for size_mb in args.sizes_mb:
            model_bytes = int(size_mb * 1e6) // 4 * 4
            for nodes in args.nodes:
                s = summarise(run_swarm(ws, tmp, nodes, model_bytes, args.rounds, hosts))
                versus = ""
                if size_mb >= 10:
                    baseline = stream_seconds(ws, int(2 * (nodes - 1) / nodes * model_bytes),
                                              hosts)
                    versus = f"{s['round'] / baseline:.2f}x ({baseline * 1000:.0f} ms)"
                table.add_row(str(nodes), f"{size_mb:g} MB", f"{s['round'] * 1000:.0f} ms",
                              f"{s['control'] * 1000:.0f} ms", f"{s['exchange'] * 1000:.0f} ms",
                              f"{s['sent']:.2f}", f"{s['received']:.2f}", versus, str(s["n"]))
                print(f"done: N={nodes}, {size_mb:g} MB", file=sys.stderr, flush=True)
    Console(width=150).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
