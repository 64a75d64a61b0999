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
model-I/ (node I's MODEL_DIR: metrics.json, saved_models/), logs/ (every process's
output), local-model-I/ (--local).

The processes are the launcher library's (swarm.lab.launch.LocalSwarm, which the tests,
the benchmarks and the lab use too); what is here is the examples' command line.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run.sh runs this by path
from swarm.lab.launch import (LocalSwarm, NodeProcess, Site, gen_cert_argv,  # noqa: E402
                              make_workspace, stop_all, wait_all)

DATA_FILES = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz",
              "mnist": "mnist.npz"}
SYNTH_SIZES = {"train": 2000, "test": 500}  # --synth: small, quick, still learnable
SIDECAR_LAUNCHER = shlex.join([sys.executable, "-m", "ml_sidecar"])


def tls_args(run_dir: Path, site: int, role: str) -> list[str]:
    """The --cert/--key/--capath of site-SITE's ROLE under RUN_DIR/workspace."""
    return Site(f"site-{site}", site, run_dir / "workspace" / f"site-{site}" / "cert").tls_args(role)


def sidecar_env(args: argparse.Namespace) -> dict[str, str]:
    """The training program's environment beyond its place in the swarm: DATA_DIR,
    MIN_PEERS (all nodes, unless set here), then -e pairs."""
    env = {"DATA_DIR": str(args.data_dir)}
    if "MIN_PEERS" not in os.environ:
        env["MIN_PEERS"] = str(args.nodes)
    env.update(dict(pair.split("=", 1) for pair in args.env))
    return env


def local_env(args: argparse.Namespace, node: int) -> dict[str, str]:
    return {"NODE_INDEX": str(node - 1), "NUM_NODES": str(args.nodes),
            "MODEL_DIR": str(args.run_dir / f"local-model-{node}"), **sidecar_env(args)}


def local_command(args: argparse.Namespace) -> list[str]:
    return [sys.executable, str(args.train), "--local"]


def swarm_of(args: argparse.Namespace, on_line) -> LocalSwarm:
    return LocalSwarm(args.run_dir, args.nodes, [args.train.name], env=sidecar_env(args),
                      entrypoint=SIDECAR_LAUNCHER, sidecar_dir=args.train.parent,
                      port_base=args.port_base, scripts=True, new_session=True,
                      on_line=on_line)


def printer():
    """on_line for every process: its lines on stdout, prefixed with its name."""
    lock = threading.Lock()

    def on_line(name: str, line: str) -> None:
        with lock:
            print(f"{name:>6} | {line}", flush=True)

    return on_line


def failed() -> None:
    print("launch: a node failed: stopping the others", flush=True)


def ensure_data(args: argparse.Namespace) -> None:
    """With --synth, writes a small synthetic stand-in when the data file is missing."""
    if not args.synth or (args.data_dir / DATA_FILES[args.data_format]).exists():
        return
    from swarm.data.synth import WRITERS
    path = WRITERS[args.data_format](args.data_dir, **SYNTH_SIZES)
    print(f"launch: no {DATA_FILES[args.data_format]} in {args.data_dir}: wrote a synthetic "
          f"stand-in ({SYNTH_SIZES['train']} training, {SYNTH_SIZES['test']} test images): {path}",
          flush=True)


def run_swarm(args: argparse.Namespace, stopping: list) -> int:
    swarm = swarm_of(args, printer())
    stopping.append(swarm.stop)
    try:
        swarm.start()
    except AssertionError:  # the sentinel exited or timed out before serving
        print("launch: the sentinel did not become ready; see its output above", flush=True)
        return 1
    return report(args, swarm.wait(timeout_s=float("inf"), on_failure=failed), "model")


def run_local(args: argparse.Namespace, stopping: list) -> int:
    on_line, procs = printer(), []
    stopping.append(lambda: stop_all(procs))
    for node in range(1, args.nodes + 1):
        procs.append(NodeProcess(local_command(args), local_env(args, node), name=f"local-{node}",
                                 on_line=on_line, cwd=Path.cwd(), new_session=True))
    return report(args, wait_all(procs, float("inf"), on_failure=failed), "local-model")


def report(args: argparse.Namespace, codes: list[int], model_prefix: str) -> int:
    for node, code in enumerate(codes, start=1):
        metrics = args.run_dir / f"{model_prefix}-{node}" / "metrics.json"
        print(f"launch: node {node} exited {code}; metrics: {metrics}", flush=True)
    return next((code for code in codes if code != 0), 0)


def dry_run(args: argparse.Namespace) -> int:
    """Prints what a real run would run, touching nothing."""
    commands = [gen_cert_argv(args.run_dir / "workspace", site, scripts=True)
                for site in range(1, args.nodes + 1)]
    if args.local:
        commands = [["env", *(f"{k}={v}" for k, v in local_env(args, n).items()),
                     *local_command(args)] for n in range(1, args.nodes + 1)]
    elif not args.certs_only:
        commands += swarm_of(args, None).commands()
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
        make_workspace(args.run_dir / "workspace", args.nodes)
        print(f"launch: certificates for {args.nodes} sites in {args.run_dir / 'workspace'}")
        return 0
    ensure_data(args)
    stopping: list = []  # how to stop what was started

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # SIGINT too: a shell starts background jobs with it ignored, which Python keeps.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    for sig in signals:
        signal.signal(sig, on_signal)
    try:
        return run_local(args, stopping) if args.local else run_swarm(args, stopping)
    except KeyboardInterrupt:
        print("launch: stopping every node", flush=True)
        return 130
    finally:
        for sig in signals:  # a second Ctrl-C must not leave nodes behind half-stopped
            signal.signal(sig, signal.SIG_IGN)
        for stop in stopping:
            stop()


if __name__ == "__main__":
    sys.exit(main())
