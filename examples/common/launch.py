"""Runs an example swarm on this host: what every example's run.sh calls.

    launch.py --train examples/NAME/train.py --data-format FORMAT [options]

1. certificates: one site per SL node (gen-cert -e site-I -i I), every site trusting
   every other site's CA (kept in RUN_DIR/workspace and reused by later runs);
2. a sentinel SN (run-sn --sentinel) on a fresh ledger, waited for until it serves;
3. NODES SL nodes (run-sl), each starting the example's train.py as its ML sidecar (a
   local process, through `python -m ml_sidecar`) with NODE_INDEX, NUM_NODES,
   MODEL_DIR and DATA_DIR set for it;
4. their output followed on this terminal, each line prefixed with the node's name,
   until every SL node has exited; then the sentinel is stopped.

Ctrl-C (or SIGTERM) stops everything, SL nodes first. `--local` instead runs each
node's train.py alone (the local baseline); `--dry-run` prints the commands and runs
nothing; `--certs-only` makes the certificates and stops (compose files use it).

Layout of RUN_DIR: workspace/ (certificates), sn-1/ (the ledger), sl-I/ (SL node logs),
model-I/ (node I's MODEL_DIR: metrics.json, saved_models/), local-model-I/ (--local).
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

READY_LINE = "Starting SWARM-API-SERVER on port:"
SENTINEL_READY_TIMEOUT_S = 120
STOP_TIMEOUT_S = 20
DATA_FILES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz",
              "mnist": "mnist.npz"}
SYNTH_SIZES = {"train": 2000, "test": 500}  # --synth: small, quick, still learnable


@dataclass(frozen=True)
class Ports:
    sn_p2p: int
    sn_api: int
    sl: list[int]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def choose_ports(base: int, nodes: int) -> Ports:
    """SN p2p and API ports, then one SL port per node: from `base` up, or free ones for 0."""
    if base == 0:
        return Ports(free_port(), free_port(), [free_port() for _ in range(nodes)])
    return Ports(base, base + 1, [base + 2 + i for i in range(nodes)])


def program(script: str, module: str) -> list[str]:
    """A swarm console script installed beside this Python, else the module run by it."""
    path = Path(sys.executable).parent / script
    return [str(path)] if path.exists() else [sys.executable, "-m", module]


def cert_dir(run_dir: Path, site: int) -> Path:
    return run_dir / "workspace" / f"site-{site}" / "cert"


def tls_args(run_dir: Path, site: int, role: str) -> list[str]:
    certs = cert_dir(run_dir, site)
    return ["--cert", str(certs / f"{role}-{site}-cert.pem"),
            "--key", str(certs / f"{role}-{site}-key.pem"), "--capath", str(certs / "ca" / "capath")]


def gen_cert_commands(run_dir: Path, nodes: int) -> list[list[str]]:
    return [[*program("gen-cert", "certs.gen_cert"), "-e", f"site-{site}", "-i", str(site),
             "--out", str(run_dir / "workspace")] for site in range(1, nodes + 1)]


def make_workspace(run_dir: Path, nodes: int) -> None:
    """gen-cert for every site not made yet, then every CA certificate into every capath."""
    for site, argv in enumerate(gen_cert_commands(run_dir, nodes), start=1):
        if not cert_dir(run_dir, site).exists():
            subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    for site in range(1, nodes + 1):
        for other in range(1, nodes + 1):
            ca = cert_dir(run_dir, other) / "ca" / "capath" / f"ca-{other}-cert.pem"
            target = cert_dir(run_dir, site) / "ca" / "capath" / ca.name
            if other != site and not target.exists():
                shutil.copy(ca, target)


def sentinel_command(run_dir: Path, ports: Ports) -> list[str]:
    return [*program("run-sn", "sn_node.cli"), "--sentinel", "--host-ip", "127.0.0.1",
            "--sn-api-port", str(ports.sn_api), "--sn-p2p-port", str(ports.sn_p2p),
            *tls_args(run_dir, 1, "sn"), "--data-dir", str(run_dir / "sn-1")]


def sidecar_env(args: argparse.Namespace, node: int, model_dir: Path) -> dict[str, str]:
    """The training program's environment: this node's place in the swarm, then -e pairs."""
    env = {"NODE_INDEX": str(node - 1), "NUM_NODES": str(args.nodes),
           "MODEL_DIR": str(model_dir), "DATA_DIR": str(args.data_dir)}
    if "MIN_PEERS" not in os.environ:
        env["MIN_PEERS"] = str(args.nodes)
    env.update(dict(pair.split("=", 1) for pair in args.env))
    return env


def sl_command(args: argparse.Namespace, ports: Ports, node: int) -> list[str]:
    argv = [*program("run-sl", "sl_node.cli"), "--host-ip", "127.0.0.1", "--sn-ip", "127.0.0.1",
            "--sn-api-port", str(ports.sn_api), "--sl-fs-port", str(ports.sl[node - 1]),
            *tls_args(args.run_dir, node, "sl"), "--data-dir", str(args.run_dir / f"sl-{node}"),
            "--ml-entrypoint", shlex.join([sys.executable, "-m", "ml_sidecar"]),
            "--ml-cmd", args.train.name,
            "--ml-w", str(args.train.parent)]
    for key, value in sidecar_env(args, node, args.run_dir / f"model-{node}").items():
        argv += ["--ml-e", f"{key}={value}"]
    return argv


class Fleet:
    """The processes this launcher started, their output prefixed on stdout."""

    def __init__(self, on_line: Callable[[str, str], None] | None = None) -> None:
        """`on_line(name, line)`, when given, takes each output line instead of stdout."""
        self.procs: list[tuple[str, subprocess.Popen, bool]] = []  # (name, process, stop last)
        self._threads: list[threading.Thread] = []
        self._print = threading.Lock()
        self._seen: dict[str, threading.Event] = {}
        self._on_line = on_line

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              watch: str | None = None, stop_last: bool = False) -> subprocess.Popen:
        # Own sessions: Ctrl-C reaches only this launcher, which stops them in order.
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        self.procs.append((name, proc, stop_last))
        seen = self._seen.setdefault(name, threading.Event())
        thread = threading.Thread(target=self._follow, args=(name, proc, watch, seen), daemon=True)
        thread.start()
        self._threads.append(thread)
        return proc

    def _follow(self, name: str, proc: subprocess.Popen, watch: str | None,
                seen: threading.Event) -> None:
        for line in proc.stdout:
            with self._print:
                if self._on_line is not None:
                    self._on_line(name, line.rstrip())
                else:
                    print(f"{name:>6} | {line.rstrip()}", flush=True)
            if watch and watch in line:
                seen.set()

    def wait_for(self, name: str, proc: subprocess.Popen, timeout_s: float) -> bool:
        """Whether `name` printed its watched line before exiting or timing out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and proc.poll() is None:
            if self._seen[name].wait(0.2):
                return True
        return self._seen[name].is_set()

    def stop(self) -> None:
        """Stops every live process: the nodes all at once, then those marked stop_last
        (the sentinel, which the SL nodes need until they are gone)."""
        for last in (False, True):
            group = [proc for _, proc, stop_last in self.procs if stop_last == last]
            terminate(group)
        for thread in self._threads:
            thread.join(5)


def terminate(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each live process, then waits; SIGKILL for any still alive after the timeout."""
    live = [proc for proc in procs if proc.poll() is None]
    for proc in live:
        proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in live:
        try:
            proc.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ensure_data(args: argparse.Namespace) -> None:
    """With --synth, writes a small synthetic stand-in when the data file is missing."""
    if not args.synth or (args.data_dir / DATA_FILES[args.data_format]).exists():
        return
    from swarm.data.synth import WRITERS
    path = WRITERS[args.data_format](args.data_dir, **SYNTH_SIZES)
    print(f"launch: no {DATA_FILES[args.data_format]} in {args.data_dir}: wrote a synthetic "
          f"stand-in ({SYNTH_SIZES['train']} training, {SYNTH_SIZES['test']} test images): {path}",
          flush=True)


def run_swarm(args: argparse.Namespace, fleet: Fleet) -> int:
    ports = choose_ports(args.port_base, args.nodes)
    make_workspace(args.run_dir, args.nodes)
    for stale in ["sn-1", *(f"sl-{n}" for n in range(1, args.nodes + 1))]:
        shutil.rmtree(args.run_dir / stale, ignore_errors=True)  # a fresh ledger every run
    sentinel = fleet.start("sn-1", sentinel_command(args.run_dir, ports), watch=READY_LINE,
                           stop_last=True)
    if not fleet.wait_for("sn-1", sentinel, SENTINEL_READY_TIMEOUT_S):
        print("launch: the sentinel did not become ready; see its output above", flush=True)
        return 1
    nodes = [fleet.start(f"sl-{n}", sl_command(args, ports, n)) for n in range(1, args.nodes + 1)]
    return report(args, wait_all(nodes), "model")


def run_local(args: argparse.Namespace, fleet: Fleet) -> int:
    procs = []
    for node in range(1, args.nodes + 1):
        env = sidecar_env(args, node, args.run_dir / f"local-model-{node}")
        procs.append(fleet.start(f"local-{node}", local_command(args), env))
    return report(args, wait_all(procs), "local-model")


def wait_all(procs: list[subprocess.Popen]) -> list[int]:
    """Every process's exit status; once one fails, the others are stopped: in a swarm
    its peers would otherwise wait for it forever."""
    while any(proc.poll() is None for proc in procs):
        if any(proc.poll() not in (None, 0) for proc in procs):
            print("launch: a node failed: stopping the others", flush=True)
            terminate(procs)
            break
        time.sleep(0.5)
    return [proc.wait() for proc in procs]


def local_command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(args.train), "--local"]


def report(args: argparse.Namespace, codes: list[int], model_prefix: str) -> int:
    for node, code in enumerate(codes, start=1):
        metrics = args.run_dir / f"{model_prefix}-{node}" / "metrics.json"
        print(f"launch: node {node} exited {code}; metrics: {metrics}", flush=True)
    return next((code for code in codes if code != 0), 0)


def dry_run(args: argparse.Namespace) -> int:
    """Prints what a real run would run, touching nothing."""
    ports = choose_ports(args.port_base, args.nodes)
    commands = gen_cert_commands(args.run_dir, args.nodes)
    if args.local:
        commands = [["env", *(f"{k}={v}" for k, v in sidecar_env(
            args, n, args.run_dir / f"local-model-{n}").items()), *local_command(args)]
                    for n in range(1, args.nodes + 1)]
    elif not args.certs_only:
        commands += [sentinel_command(args.run_dir, ports)]
        commands += [sl_command(args, ports, n) for n in range(1, args.nodes + 1)]
    for argv in commands:
        print(shlex.join(argv))
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="run.sh", description="Run this example as a swarm on this host: certificates, "
        "a sentinel SN, and SL nodes each training with its own ML sidecar.")
    parser.add_argument("--train", type=Path, help="the example's training program (set by run.sh)")
    parser.add_argument("--data-format", choices=sorted(DATA_FILES),
                        help="the data set it reads (set by run.sh)")
    parser.add_argument("--nodes", type=int, default=2, help="SL nodes (default 2)")
    parser.add_argument("--run-dir", type=Path,
                        help="certificates, logs and models (default: the example's run/)")
    parser.add_argument("--data-dir", type=Path,
                        help="where the data file is (default: $DATA_DIR, else the example's data/)")
    parser.add_argument("--synth", action="store_true",
                        help="no data file there? write a small synthetic one first")
    parser.add_argument("--port-base", type=int, default=30303, metavar="PORT",
                        help="SN p2p port; the SN API and SL ports follow it (default 30303; "
                             "0: any free ports)")
    parser.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                        help="environment for every training program (repeatable), "
                             "e.g. -e MAX_EPOCHS=2")
    parser.add_argument("--attack", metavar="KIND",
                        help="make --poison-ratio of the nodes attack (labelflip, backdoor, "
                             "signflip, gaussian): the same as -e ATTACK=KIND")
    parser.add_argument("--poison-ratio", type=float, metavar="R",
                        help="share of the nodes that attack: the same as -e POISON_RATIO=R")
    parser.add_argument("--local", action="store_true",
                        help="no swarm: train each node's share alone (the local baseline)")
    parser.add_argument("--certs-only", action="store_true",
                        help="only make the certificates under RUN_DIR/workspace")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    if not args.certs_only and (args.train is None or args.data_format is None):
        parser.error("--train and --data-format are needed (run.sh sets them)")
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    # The training program reads them from its environment (examples/common/example.py).
    if args.attack is not None:
        args.env.append(f"ATTACK={args.attack}")
    if args.poison_ratio is not None:
        args.env.append(f"POISON_RATIO={args.poison_ratio}")
    for pair in args.env:
        if "=" not in pair or pair.startswith("="):
            parser.error(f"-e {pair!r} is not KEY=VALUE")
    if args.train is not None:
        args.train = args.train.resolve()
    example = args.train.parent if args.train else Path.cwd()
    args.run_dir = (args.run_dir or example / "run").resolve()
    data_dir = args.data_dir or os.environ.get("DATA_DIR") or example / "data"
    args.data_dir = Path(data_dir).resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.dry_run:
        return dry_run(args)
    if args.certs_only:
        make_workspace(args.run_dir, args.nodes)
        print(f"launch: certificates for {args.nodes} sites in {args.run_dir / 'workspace'}")
        return 0
    ensure_data(args)
    fleet = Fleet()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGINT too: a shell starts background jobs with it ignored, which Python keeps.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        signal.signal(sig, on_signal)
    try:
        return run_local(args, fleet) if args.local else run_swarm(args, fleet)
    except KeyboardInterrupt:
        print("launch: stopping every node", flush=True)
        return 130
    finally:
        for sig in signals:  # a second Ctrl-C must not leave nodes behind half-stopped
            signal.signal(sig, signal.SIG_IGN)
        fleet.stop()


if __name__ == "__main__":
    sys.exit(main())
