"""`stop-swarm`: stops the swarm nodes started detached (`run-sn -d`, `run-sl -d`)."""

from __future__ import annotations

import argparse
import sys

from swarm.daemon import detached_nodes, run_dir, stop_nodes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="stop-swarm",
        description="Stop the swarm nodes this user started with -d (SL nodes first, then SN).")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--sn-only", action="store_true", help="stop only SN nodes")
    which.add_argument("--sl-only", action="store_true", help="stop only SL nodes")
    parser.add_argument("--grace", type=float, default=15.0, metavar="SECONDS",
                        help="how long to wait after SIGTERM before SIGKILL (default 15)")
    args = parser.parse_args(argv)

    kinds = ["sn"] if args.sn_only else ["sl"] if args.sl_only else ["sl", "sn"]
    stopped = 0
    # SL nodes first, so they do not spend their last seconds retrying a vanished SN.
    for kind in kinds:
        nodes = detached_nodes(kind)
        if not nodes:
            continue
        killed = stop_nodes(nodes, grace_s=args.grace)
        for node in nodes:
            how = "killed (did not stop within the grace period)" if node in killed else "stopped"
            print(f"{node.kind} node {node.name} (pid {node.pid}) {how}")
        stopped += len(nodes)
    if not stopped:
        print(f"no detached swarm nodes are running (records in {run_dir()})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
