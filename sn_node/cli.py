"""`run-sn`: starts a Swarm Network node (the sentinel with --sentinel, else a joiner)."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from swarm.cli.args import add_metrics_args, ip_address, node_tls, port
from swarm.daemon import detach
from swarm.metrics_export import NodeMetrics

from sn_node import service
from sn_node.node import READY_LINE, NodeConfig, StartupError, SwarmNetworkNode

log = logging.getLogger("swarm.sn")
DASHBOARD_PORT = 30380


class Interrupted(BaseException):
    """SIGTERM or SIGINT arrived before the node was serving: start-up stops where it is."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-sn",
        description="Run a Swarm Network (SN) node: it keeps the ledger and serves the SN "
                    "API to SL nodes over mutual TLS.")
    role = p.add_argument_group("swarm")
    role.add_argument("--sentinel", action="store_true",
                      help="start a new swarm: create the ledger and deploy its contract")
    role.add_argument("--sentinel-ip", type=ip_address, metavar="IP",
                      help="join the swarm whose sentinel SN runs at this address")
    role.add_argument("--sentinel-api-port", type=port, default=30304, metavar="PORT",
                      help="the sentinel's SN API port (default 30304)")
    net = p.add_argument_group("network")
    net.add_argument("--host-ip", type=ip_address, default="127.0.0.1", metavar="IP",
                     help="address other nodes reach this SN at (default 127.0.0.1)")
    net.add_argument("--bind-ip", type=ip_address, metavar="IP",
                     help="address to listen on (default: --host-ip)")
    net.add_argument("--sn-api-port", type=port, default=30304, metavar="PORT",
                     help="SN API port, for SL nodes and joining SN nodes (default 30304)")
    net.add_argument("--sn-p2p-port", type=port, default=30303, metavar="PORT",
                     help="SN-to-SN ledger port: the sentinel serves its embedded chain "
                          "to other SN nodes here (default 30303)")
    tls = p.add_argument_group("identity (from gen-cert)")
    tls.add_argument("--cert", required=True, help="this SN's certificate (sn-INDEX-cert.pem)")
    tls.add_argument("--key", required=True, help="this SN's private key (sn-INDEX-key.pem)")
    tls.add_argument("--capath", required=True,
                     help="directory of the CA certificates this node trusts")
    ledger = p.add_argument_group("ledger")
    ledger.add_argument("--ledger-url", metavar="URL",
                        help="use an external JSON-RPC chain (anvil, geth, Besu) instead of "
                             "the sentinel's embedded one")
    ledger.add_argument("--ledger-key-file", metavar="FILE",
                        help="with --ledger-url: a file holding the hex private key of a funded "
                             "account for this SN (default: the sentinel uses the first "
                             "development account of a dev chain such as anvil; joiners get "
                             "a key of their own, funded by the sentinel)")
    run = p.add_argument_group("process")
    run.add_argument("-d", "--detach", action="store_true",
                     help="run in the background; log and pid record under --data-dir")
    run.add_argument("--data-dir", metavar="DIR",
                     help="where the ledger, keys and logs live "
                          "(default ./swarm-data/sn-<sn-api-port>)")
    run.add_argument("--round-grace", type=float, default=2.0, metavar="SECONDS",
                     help="once min_peers have checked in, how long to wait for the other "
                          "active nodes before sealing the round (default 2)")
    run.add_argument("--liveness-timeout", type=float, default=10.0, metavar="SECONDS",
                     help="an SL node silent this long is marked inactive (default 10)")
    watch = p.add_argument_group("watching")
    add_metrics_args(watch)
    watch.add_argument("--dashboard", action="store_true",
                       help="serve a live dashboard over HTTPS (this SN's certificate); open it "
                            "with a certificate from --capath or the URL with the token printed "
                            "at start")
    watch.add_argument("--dashboard-host", type=ip_address, default="127.0.0.1", metavar="IP",
                       help="with --dashboard: the address to serve it on (default 127.0.0.1)")
    watch.add_argument("--dashboard-port", type=port, default=DASHBOARD_PORT, metavar="PORT",
                       help=f"with --dashboard: its port (default {DASHBOARD_PORT})")
    run.add_argument("--log-level", default="INFO",
                     choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def parse_config(argv: list[str] | None) -> tuple[NodeConfig, argparse.Namespace]:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.sentinel == bool(args.sentinel_ip):
        parser.error("give either --sentinel (start a new swarm) or --sentinel-ip IP "
                     "(join an existing one)")
    if args.sn_api_port == args.sn_p2p_port:
        parser.error(f"--sn-api-port and --sn-p2p-port are both {args.sn_api_port}; "
                     "they need different ports")
    if args.dashboard and args.dashboard_port in (args.sn_api_port, args.sn_p2p_port,
                                                  args.metrics_port):
        parser.error(f"--dashboard-port {args.dashboard_port} is also one of the SN's other ports")
    if args.ledger_key_file and not args.ledger_url:
        parser.error("--ledger-key-file goes with --ledger-url")
    if args.round_grace < 0 or args.liveness_timeout <= 0:
        parser.error("--round-grace must be >= 0 and --liveness-timeout > 0")
    data_dir = Path(args.data_dir or f"swarm-data/sn-{args.sn_api_port}").resolve()
    config = NodeConfig(
        sentinel=args.sentinel,
        sentinel_target=(f"{args.sentinel_ip}:{args.sentinel_api_port}"
                         if args.sentinel_ip else None),
        host_ip=args.host_ip,
        bind_ip=args.bind_ip or args.host_ip,
        api_port=args.sn_api_port,
        p2p_port=args.sn_p2p_port,
        data_dir=data_dir,
        ledger_url=args.ledger_url,
        ledger_key_file=Path(args.ledger_key_file) if args.ledger_key_file else None,
        round_grace_s=args.round_grace,
        liveness_timeout_s=args.liveness_timeout,
    )
    return config, args


def feed_metrics(node: SwarmNetworkNode, metrics: NodeMetrics) -> None:
    """Metrics from the SN's refusals, the outcomes SL nodes report, and the read model's
    merged rounds (a thread following its change notifications)."""
    service.REFUSAL_OBSERVERS.append(metrics.observe_refusal)

    def on_outcome(node_id, report) -> None:
        metrics.bytes_sent.inc(report.bytes_sent)
        metrics.bytes_received.inc(report.bytes_received)
        metrics.observe_dropped(report.participants, report.dropped)

    node.on_outcome = on_outcome

    def follow() -> None:
        while node.view is None:  # set early in node.start()
            threading.Event().wait(0.1)
        for event in node.view.subscribe():
            if event.kind == "merged" and event.round is not None:
                kept = node.view.round(event.round)
                seconds = (kept.merged_at - kept.opened_at
                           if kept and kept.opened_at is not None and kept.merged_at else None)
                metrics.observe_round(event.round, seconds)

    threading.Thread(target=follow, name="sn-metrics", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    config, args = parse_config(argv)
    try:
        tls = node_tls("sn", args.cert, args.key, args.capath)
    except ValueError as error:
        print(f"run-sn: error: {error}", file=sys.stderr)
        return 2

    if args.detach:
        child = [sys.executable, "-m", "sn_node.cli", *[a for a in argv if a not in ("-d", "--detach")]]
        if not args.data_dir:
            child += ["--data-dir", str(config.data_dir)]
        return detach("sn", f"{tls.identity.node_id.replace('/', '_')}-{config.api_port}",
                      child, config.data_dir / "sn.log", READY_LINE.split(":")[0])

    logging.basicConfig(level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    node = SwarmNetworkNode(config, tls)
    stop = threading.Event()
    starting = threading.Event()
    starting.set()

    def on_signal(signum, _frame):
        stop.set()
        if starting.is_set():  # reopening a long ledger, joining: abort start-up where it is
            starting.clear()
            raise Interrupted(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    metrics = NodeMetrics("sn") if args.metrics_port else None
    try:
        if metrics is not None:
            try:
                metrics.serve(args.metrics_port, args.metrics_ip)
            except OSError as error:
                raise StartupError(f"--metrics-port {args.metrics_port}: cannot listen on "
                                   f"{args.metrics_ip}: {error.strerror}") from None
            feed_metrics(node, metrics)
        node.start()
        starting.clear()
    except StartupError as error:
        starting.clear()
        log.error("%s", error)
        print(f"run-sn: error: {error}", file=sys.stderr)
        node.stop()
        return 1
    except Interrupted as interrupted:
        log.info("%s while starting: stopping", signal.Signals(interrupted.signum).name)
        node.stop()
        return 0
    dashboard = None
    if args.dashboard:
        from sn_node.dashboard import DASHBOARD_LINE, serve_dashboard

        try:
            dashboard = serve_dashboard(node, args.dashboard_host, args.dashboard_port,
                                        args.cert, args.key)
        except OSError as error:
            print(f"run-sn: error: --dashboard-port {args.dashboard_port}: {error}", file=sys.stderr)
            node.stop()
            return 1
        # The token is the browser's key: printed once, to the operator's terminal (or sn.log).
        print(DASHBOARD_LINE.format(url=dashboard.token_url), flush=True)
    # Waits in slices: a signal delivered to another thread (gRPC's, the ledger's) only
    # sets a flag, which the main thread acts on the next time it runs Python code.
    while not stop.wait(0.5):
        pass
    log.info("stopping SN node %s", tls.identity.node_id)
    if dashboard is not None:
        dashboard.stop()
    node.stop()
    return 0

if __name__ == "__main__":
    sys.exit(main())
