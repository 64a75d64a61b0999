"""`run-sl`: starts a Swarm Learning node and its ML sidecar; exits with the sidecar's status."""

from __future__ import annotations

import argparse
import hashlib
import logging
import shlex
import signal
import sys
import tempfile
import threading
from pathlib import Path

from swarm.cli.args import add_metrics_args, ip_address, node_tls, port
from swarm.daemon import detach
from swarm.metrics_export import NodeMetrics
from swarm.progress import ProgressLine

from sl_node.exchange.faults import parse_faults
from sl_node.local_service import SwarmLearningLocalServicer
from sl_node.node import SLConfig, StartupError, SwarmLearningNode
from sl_node.sidecar import Sidecar, SidecarSpec, parse_env, parse_volume, prepare_container

log = logging.getLogger("swarm.sl")
READY_LINE = "SL node {node_id} ready on port: {port}"
UNIX_PATH_MAX = 100  # sockaddr_un holds 108 bytes; keep a margin


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-sl",
        description="Run a Swarm Learning (SL) node and its ML sidecar: the node merges the "
                    "sidecar's weights with its peers' over mutual TLS.")
    net = p.add_argument_group("network")
    net.add_argument("--host-ip", type=ip_address, default="127.0.0.1", metavar="IP",
                     help="address peers reach this SL node at (default 127.0.0.1)")
    net.add_argument("--bind-ip", type=ip_address, metavar="IP", help="address to listen on (default: --host-ip)")
    net.add_argument("--sn-ip", type=ip_address, default="127.0.0.1", metavar="IP",
                     help="the SN node this SL node registers with (default 127.0.0.1)")
    net.add_argument("--sn-api-port", type=port, default=30304, metavar="PORT",
                     help="that SN's API port (default 30304)")
    net.add_argument("--sl-fs-port", type=port, default=30305, metavar="PORT",
                     help="port this node serves its peers on (default 30305)")
    tls = p.add_argument_group("identity (from gen-cert)")
    tls.add_argument("--cert", required=True, help="this node's certificate (sl-INDEX-cert.pem)")
    tls.add_argument("--key", required=True, help="its private key (sl-INDEX-key.pem)")
    tls.add_argument("--capath", required=True, help="directory of trusted CA certificates")
    ml = p.add_argument_group("the ML sidecar (the user's training program)")
    ml.add_argument("--ml-image", metavar="IMAGE",
                    help="run the sidecar in this container image (docker or podman); "
                         "without it the sidecar is a local process")
    ml.add_argument("--ml-engine", choices=["docker", "podman", "docker-sdk"],
                    help="container engine for --ml-image (default: docker if its daemon "
                         "answers, else podman); docker-sdk: the Docker SDK (the `docker` "
                         "extra) against DOCKER_HOST, e.g. podman's unix:///run/podman/podman.sock")
    ml.add_argument("--ml-name", metavar="NAME", help="container name")
    ml.add_argument("--ml-keep", action="store_true",
                    help="keep the sidecar's container after it exits (default: removed)")
    ml.add_argument("--ml-w", metavar="DIR", help="the sidecar's working directory")
    ml.add_argument("--ml-entrypoint", metavar="CMD", help="program to run, e.g. python3")
    ml.add_argument("--ml-cmd", metavar="ARGS", default="",
                    help="its arguments, e.g. 'train.py --epochs 3' (one shell-quoted string)")
    ml.add_argument("--ml-v", action="append", default=[], metavar="SRC:DST[:ro]",
                    help="mount SRC at DST (repeatable; SRC must exist; options such as ro "
                         "go to the engine); for a local process, paths under DST in the "
                         "command and environment are rewritten to SRC")
    ml.add_argument("--ml-e", action="append", default=[], metavar="KEY=VALUE",
                    help="environment variable for the sidecar (repeatable), e.g. MAX_EPOCHS=5")
    run = p.add_argument_group("process")
    run.add_argument("-d", "--detach", action="store_true",
                     help="run in the background; log and pid file under --data-dir")
    run.add_argument("--data-dir", metavar="DIR",
                     help="logs and the local socket (default ./swarm-data/sl-<sl-fs-port>)")
    run.add_argument("--peer-timeout", type=float, default=5.0, metavar="SECONDS",
                     help="a peer silent this long (plus transfer time) is dropped from a "
                          "round (default 5)")
    watch = p.add_argument_group("watching")
    add_metrics_args(watch)
    watch.add_argument("--progress", choices=["auto", "off"], default="auto",
                       help="a one-line progress display (round, who is missing, for how "
                            "long): in place on a terminal, a `progress:` line every 10 s "
                            "otherwise (default auto)")
    run.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    # Chaos experiments: make this node misbehave on purpose (Fault names, comma-separated,
    # e.g. veto_all,equivocate_merged), through the exchange's outgoing hook as the tests do.
    run.add_argument("--experiment-faults", default="", help=argparse.SUPPRESS)
    return p


def socket_path_for(data_dir: Path) -> Path:
    """The local socket; a short path under /tmp when the data directory's is too long."""
    path = data_dir / "sl.sock"
    if len(str(path)) <= UNIX_PATH_MAX:
        return path
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"swarm-sl-{tag}" / "sl.sock"


def parse(argv: list[str]) -> tuple[SLConfig, SidecarSpec, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.peer_timeout <= 0:
        parser.error("--peer-timeout must be > 0")
    try:
        volumes = [parse_volume(v) for v in args.ml_v]
        env = dict(parse_env(e) for e in args.ml_e)
        cmd = shlex.split(args.ml_cmd)
        entrypoint = shlex.split(args.ml_entrypoint or "")
    except ValueError as error:
        parser.error(str(error))
    if not cmd and not entrypoint and not args.ml_image:
        parser.error("say what the ML sidecar runs: --ml-cmd (and --ml-entrypoint), "
                     "or --ml-image")
    try:
        faults = frozenset(parse_faults(args.experiment_faults))
    except ValueError as error:
        parser.error(f"--experiment-faults: {error}")
    data_dir = Path(args.data_dir or f"swarm-data/sl-{args.sl_fs_port}").resolve()
    config = SLConfig(host_ip=args.host_ip, bind_ip=args.bind_ip or args.host_ip,
                      sn_target=f"{args.sn_ip}:{args.sn_api_port}", fs_port=args.sl_fs_port,
                      data_dir=data_dir, socket_path=socket_path_for(data_dir),
                      peer_timeout_s=args.peer_timeout, experiment_faults=faults)
    spec = SidecarSpec(cmd=cmd, entrypoint=entrypoint, workdir=args.ml_w, env=env,
                       volumes=volumes, image=args.ml_image, name=args.ml_name,
                       engine=args.ml_engine, keep=args.ml_keep)
    return config, spec, args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, spec, args = parse(argv)
    try:
        tls = node_tls("sl", args.cert, args.key, args.capath)
    except ValueError as error:
        print(f"run-sl: error: {error}", file=sys.stderr)
        return 2
    if args.detach:
        child = [sys.executable, "-m", "sl_node.cli",
                 *[a for a in argv if a not in ("-d", "--detach")]]
        if not args.data_dir:
            child += ["--data-dir", str(config.data_dir)]
        return detach("sl", f"{tls.identity.node_id.replace('/', '_')}-{config.fs_port}", child,
                      config.data_dir / "sl.log", "SL node")

    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The sidecar is forked before this process creates any gRPC object: forking
    # while gRPC's threads run can leave the child with a broken poller. It waits
    # for the node's socket to appear.
    config.socket_path.unlink(missing_ok=True)  # a stale socket from an earlier run
    try:
        if spec.image:
            spec = prepare_container(spec)
        sidecar = Sidecar(spec, config.socket_path, config.data_dir / "ml-sidecar.log")
    except ValueError as error:
        print(f"run-sl: error: {error}", file=sys.stderr)
        return 1
    stopping = threading.Event()
    node = SwarmLearningNode(config, tls)

    def on_signal(*_):
        # Returns at once: the sidecar gets SIGTERM, and calls still retrying an
        # unreachable SN end now instead of after their retry budget.
        stopping.set()
        sidecar.request_stop()
        # From another thread: this handler may have interrupted the main thread inside
        # a gRPC call that holds the channel's lock.
        threading.Thread(target=node.sn.close, name="sn-close", daemon=True).start()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    metrics = None
    if args.metrics_port:
        metrics = NodeMetrics("sl")
        node.outcomes.add(lambda o: metrics.observe_outcome(
            o.round, o.status, o.control_s + o.exchange_s, o.bytes_sent, o.bytes_received,
            o.participants, o.dropped))
    progress = None
    try:
        if metrics is not None:
            try:
                metrics.serve(args.metrics_port, args.metrics_ip)
            except OSError as error:
                raise StartupError(f"--metrics-port {args.metrics_port}: cannot listen on "
                                   f"{args.metrics_ip}: {error.strerror}") from None
        node.start()
        node.serve_local(SwarmLearningLocalServicer(node))
        print(READY_LINE.format(node_id=tls.identity.node_id, port=config.fs_port), flush=True)
        if args.progress == "auto":
            tty = sys.stderr.isatty()
            progress = ProgressLine(lambda: node.sn.view(rounds=3, events=1),
                                    interval_s=1.0 if tty else 10.0,
                                    tty=tty).start()
    except StartupError as error:
        if not stopping.is_set():
            print(f"run-sl: error: {error}", file=sys.stderr)
        sidecar.stop()
        node.stop()
        return 0 if stopping.is_set() else 1
    # Waits in slices: a signal delivered to another thread only sets a flag, which the
    # main thread acts on the next time it runs Python code (never inside waitpid()).
    while sidecar.proc.poll() is None:
        stopping.wait(0.2)
    code = sidecar.wait()
    if progress is not None:
        progress.stop()
    if stopping.is_set():
        log.info("stopped")
    elif code == 0:
        log.info("the ML sidecar finished (exit 0)")
    else:
        log.error("the ML sidecar exited with status %d; see %s", code, sidecar.log_path)
    node.stop()
    if metrics is not None:
        metrics.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
