"""`swarm status --sn HOST:PORT`: what a swarm is doing, from one SN's read model.

Members and their liveness, the session's settings, the round in progress and who it
waits for (and for how long), recent rounds with their timings, bytes and dropped nodes,
and the nodes that finished. `--watch` refreshes in place; `--json` prints the snapshot
(swarm.swarm_view.Snapshot.to_dict()). Connects with an administrator (swci)
certificate, as other client tools do.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from swarm.cli.args import node_tls
from swarm.progress import describe
from swarm.swarm_view import Snapshot

SHOW_ROUNDS = 10


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="swarm status",
        description="Show a swarm's members, session, the round in progress and who it "
                    "waits for, and recent rounds, as one SN node sees them.")
    p.add_argument("--sn", required=True, metavar="HOST:PORT",
                   help="the SN node's API address, e.g. 127.0.0.1:30304")
    tls = p.add_argument_group("identity (from gen-cert)")
    tls.add_argument("--cert", required=True,
                     help="an administrator certificate (swci-INDEX-cert.pem)")
    tls.add_argument("--key", required=True, help="its private key (swci-INDEX-key.pem)")
    tls.add_argument("--capath", required=True, help="directory of trusted CA certificates")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--watch", action="store_true", help="refresh until interrupted")
    out.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help="with --watch: seconds between refreshes (default 1)")
    p.add_argument("--rounds", type=int, default=SHOW_ROUNDS, metavar="N",
                   help=f"recent rounds to show (default {SHOW_ROUNDS})")
    return p


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    return f"{seconds / 60:.0f} min ago"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def render(snap: Snapshot, rounds: int = SHOW_ROUNDS):
    """The status as rich renderables (tables), top to bottom."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts = []
    head = Text()
    head.append(f"SN {snap.sn_node_id}", style="bold")
    head.append(f" ({'sentinel' if snap.sentinel else 'joined'}, {snap.ledger_kind} ledger, "
                f"chain {snap.chain_id}, block {snap.block_number})\n")
    head.append(describe(snap), style="bold cyan")
    parts.append(head)

    s = snap.session
    session = Table(title="session", title_justify="left", show_header=False, box=None)
    session.add_row("min_peers", str(s.min_peers) if s.configured else "not configured")
    for key, value in sorted(s.config.items()):
        session.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
    session.add_row("finished", f"{s.finished_count} node(s)"
                    + (f": {', '.join(snap.finished_nodes)}" if snap.finished_nodes else "")
                    + (" (swarm done)" if s.swarm_done else ""))
    parts.append(session)

    members = Table(title="members", title_justify="left")
    for column in ("node", "role", "status", "alive", "last heartbeat", "endpoint", "via"):
        members.add_column(column)
    for m in snap.members:
        members.add_row(m.node_id, m.role, m.status,
                        "yes" if m.alive else ("-" if m.role == "sn" else "no"),
                        _age(m.heartbeat_age_s) if m.role != "sn" else "",
                        m.endpoint, "this SN" if m.controlled_here else "another SN")
    parts.append(members)

    wait = snap.current
    if wait is not None:
        current = Table(title=f"round {wait.round} (in progress)", title_justify="left",
                        show_header=False, box=None)
        current.add_row("checked in", ", ".join(wait.checked_in) or "nobody yet")
        current.add_row("waiting for", ", ".join(wait.missing) or (
            f"{wait.short_by} more node(s) to join" if wait.short_by else "the seal"))
        if wait.short_by:
            current.add_row("short of min_peers by", str(wait.short_by))
        current.add_row("waiting since", "no check-in yet" if wait.waiting_s is None
                        else f"{wait.waiting_s:.0f} s")
        parts.append(current)

    recent = Table(title="recent rounds", title_justify="left")
    for column in ("round", "state", "participants", "to seal", "seal to merged", "sent",
                   "received", "dropped", "disagreed"):
        recent.add_column(column, justify="right" if column in ("round", "to seal",
                                                                "seal to merged", "sent",
                                                                "received") else "left")
    for r in snap.rounds[-rounds:] if rounds > 0 else []:
        recent.add_row(str(r.round), r.state, str(len(r.participants) or len(r.checked_in)),
                       "" if r.seal_wait_s is None else f"{r.seal_wait_s:.2f} s",
                       "" if r.merge_s is None else f"{r.merge_s:.2f} s",
                       _mb(r.bytes_sent) if r.reports else "",
                       _mb(r.bytes_received) if r.reports else "",
                       ", ".join(f"{n} ({why})" for n, why in sorted(r.dropped.items())),
                       ", ".join(r.disagreed))
    parts.append(recent)
    return Group(*parts)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        print("swarm status: error: --interval must be > 0", file=sys.stderr)
        return 2
    try:
        tls = node_tls("swci", args.cert, args.key, args.capath)
    except ValueError as error:
        print(f"swarm status: error: {error}", file=sys.stderr)
        return 2
    from rich.console import Console

    from swarm.network.sn_client import SNClient, SwarmNetworkError

    console = Console(width=None if sys.stdout.isatty() else 160)
    with SNClient(args.sn, tls, timeout_s=10.0, retry_s=10.0) as sn:
        # Only what is shown (the SN builds less); --json gives all it keeps.
        fetch = sn.view if args.json else (lambda: sn.view(rounds=max(1, args.rounds), events=1))
        try:
            snap = fetch()
        except SwarmNetworkError as error:
            print(f"swarm status: error: {error}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps(snap.to_dict(), indent=2, sort_keys=True))
            return 0
        if not args.watch:
            console.print(render(snap, args.rounds))
            return 0
        if not console.is_terminal:  # a log or a pipe: one full status per refresh
            try:
                while True:
                    console.print(render(snap, args.rounds))
                    console.rule()
                    time.sleep(args.interval)
                    try:
                        snap = fetch()
                    except SwarmNetworkError as error:
                        print(f"no status from {args.sn}: {error}", flush=True)
            except KeyboardInterrupt:
                return 0
        from rich.live import Live

        try:
            with Live(render(snap, args.rounds), console=console, auto_refresh=False,
                      screen=False) as live:
                while True:
                    time.sleep(args.interval)
                    try:
                        snap = fetch()
                        live.update(render(snap, args.rounds), refresh=True)
                    except SwarmNetworkError as error:
                        from rich.text import Text
                        live.update(Text(f"no status from {args.sn}: {error}"), refresh=True)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
