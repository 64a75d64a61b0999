"""A long training as the sentinel's ledger sees it: journal size, memory and restart time.

Drives the contract directly, as the sentinel's ledger thread does once per round
(N participants: one checkInAndSeal, one commitMerged), on an embedded chain laid
out as `run-sn --data-dir` lays it out, in one process that runs on like a sentinel
(its RSS is the "driver RSS"). At each checkpoint the data dir is copied (between two
rounds, so at a commit boundary) and a fresh process measures how long reopening the
copy takes (journal replay, contract found again, the last round read back) and its
RSS; with `--sn` also a real `run-sn --sentinel` restart on the copy, to its ready line.

    .venv/bin/python benchmarks/long_run.py [--rounds 10000] [--checkpoints 1000,5000,10000]
                                            [--peers 8] [--sn] [--max-minutes 20]

Rounds past --max-minutes are not run: the table then extrapolates the later
checkpoints from the measured per-round slopes and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from swarm.ledger import EmbeddedChain, open_or_deploy  # noqa: E402

SENTINEL_ID = "bench/sn-1"

REOPEN = r"""
import json, sys, time
t0 = time.perf_counter()
from swarm.ledger import EmbeddedChain, open_or_deploy
t1, c1 = time.perf_counter(), time.process_time()
data = sys.argv[1]
chain = EmbeddedChain(data + "/chain")
sn = open_or_deploy(chain.w3, data, sentinel_node_id="x", fingerprint=b"\1" * 32, endpoint="x")
last = sn.last_sealed_round()
info = sn.round_info(last)
assert info.sealed and info.merged_digest
t2, c2 = time.perf_counter(), time.process_time()
rss = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS"))
chain.close()
print(json.dumps({"import_s": t1 - t0, "open_s": t2 - t1, "open_cpu_s": c2 - c1, "rss_kb": rss, "last": last,
                  "action": chain.load_info["action"]}))
"""


def h(tag: str) -> bytes:
    return hashlib.sha256(tag.encode()).digest()


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        return next(int(x.split()[1]) for x in fh if x.startswith("VmRSS")) / 1024


def file_mb(path: Path) -> float:
    return path.stat().st_size / 2**20 if path.exists() else 0.0


class Sentinel:
    """The sentinel's ledger, as run-sn keeps it under its data dir."""

    def __init__(self, data: Path, peers: int, identity=None):
        self.data = data
        self.chain = EmbeddedChain(data / "chain")
        first = not (data / "ledger.json").exists()
        self.sn = open_or_deploy(self.chain.w3, data,
                                 sentinel_node_id=identity.node_id if identity else SENTINEL_ID,
                                 fingerprint=identity.fingerprint if identity else h("fp-sentinel"),
                                 endpoint="127.0.0.1:1",
                                 funder=self.chain.dev_accounts[0])
        self.names = [f"bench/sl-{i + 1}" for i in range(peers)]
        if first:
            for name in self.names:
                self.sn.register_node(name, "sl", h("fp-" + name), f"127.0.0.1:{30000 + len(name)}")
            self.sn.configure(2, {"merge_method": "mean"})

    def round(self, r: int) -> None:
        self.sn.check_in_and_seal(r, self.names, [1] * len(self.names),
                                  [h(f"u{r}/{i}") for i in range(len(self.names))])
        # Every participant's vote in one batch: a strict majority decides the record.
        self.sn.commit_merged_batch(r, self.names, [h(f"m{r}")] * len(self.names))

    def close(self) -> None:
        self.chain.close()


def reopen(data: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", REOPEN, str(data)], capture_output=True, text=True,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=600)
    if out.returncode:
        raise RuntimeError(f"reopen failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def sn_restart(data: Path, ws) -> float:
    from sn_control_plane import SN  # noqa: PLC0415 - only with --sn
    node = SN(ws, 1, data, "--sentinel")
    try:
        return node.ready_s
    finally:
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10_000)
    parser.add_argument("--checkpoints", default="1000,5000,10000")
    parser.add_argument("--peers", type=int, default=8)
    parser.add_argument("--max-minutes", type=float, default=20.0)
    parser.add_argument("--sn", action="store_true", help="also time a real run-sn restart")
    parser.add_argument("--data-dir", type=Path, help="keep the chain here (default: a temp dir)")
    args = parser.parse_args()
    checkpoints = sorted({int(x) for x in args.checkpoints.split(",") if int(x) <= args.rounds})
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        data = args.data_dir or Path(tmp_name) / "sentinel"
        ws = identity = None
        if args.sn:
            sys.path.insert(0, str(REPO / "benchmarks"))
            from sn_control_plane import Workspace  # noqa: PLC0415
            ws = Workspace(Path(tmp_name) / "ws", 1)
            identity = ws.material("sn", 1).identity
        sentinel = Sentinel(data, args.peers, identity)
        deadline = time.monotonic() + args.max_minutes * 60
        r = sentinel.sn.last_sealed_round()
        started, driven = time.perf_counter(), 0
        for checkpoint in checkpoints:
            while r < checkpoint and time.monotonic() < deadline:
                r += 1
                sentinel.round(r)
                driven += 1
            if r < checkpoint:
                break
            row = {"rounds": r, "measured": True, "journal_mb": file_mb(data / "chain" / "chain.journal"),
                   "archive_mb": file_mb(data / "chain" / "chain-archive.jsonl"), "driver_rss_mb": rss_mb(),
                   "rounds_per_s": driven / (time.perf_counter() - started),
                   "compactions": getattr(sentinel.chain, "compactions", 0)}
            copy = Path(tmp_name) / f"copy-{r}"
            shutil.copytree(data, copy)
            again = reopen(copy)
            row.update(reopen_s=again["open_s"], reopen_cpu_s=again["open_cpu_s"], import_s=again["import_s"],
                       reopen_rss_mb=again["rss_kb"] / 1024)
            if ws is not None:
                row["sn_restart_s"] = sn_restart(copy, ws)
            shutil.rmtree(copy)
            rows.append(row)
            print(json.dumps(row), flush=True)
            started, driven = time.perf_counter(), 0
        sentinel.close()

    # Checkpoints not reached in time: extrapolate from the slope between the last two.
    measured = list(rows)
    for checkpoint in checkpoints[len(measured):]:
        if len(measured) < 2:
            break
        a, b = measured[-2], measured[-1]
        span = b["rounds"] - a["rounds"]
        row = {"rounds": checkpoint, "measured": False}
        for key in ("journal_mb", "archive_mb", "driver_rss_mb", "reopen_s", "reopen_cpu_s", "reopen_rss_mb",
                    "sn_restart_s"):
            if key in b:
                row[key] = max(0.0, b[key] + (b[key] - a[key]) / span * (checkpoint - b["rounds"]))
        rows.append(row)

    table = Table(title=f"Sentinel ledger over a long run ({args.peers} participants per round; "
                        "checkInAndSeal + commitMerged per round)")
    for column in ("rounds", "journal", "archive", "driver RSS", "reopen", "reopen CPU", "reopened RSS",
                   "run-sn restart", "rounds/s"):
        table.add_column(column, justify="right")
    for row in rows:
        mark = "" if row["measured"] else " (extrapolated)"
        table.add_row(f"{row['rounds']}{mark}", f"{row['journal_mb']:.1f} MB", f"{row['archive_mb']:.1f} MB",
                      f"{row['driver_rss_mb']:.0f} MB", f"{row['reopen_s']:.2f} s",
                      f"{row['reopen_cpu_s']:.2f} s" if "reopen_cpu_s" in row else "-",
                      f"{row['reopen_rss_mb']:.0f} MB",
                      f"{row['sn_restart_s']:.2f} s" if "sn_restart_s" in row else "-",
                      f"{row['rounds_per_s']:.1f}" if "rounds_per_s" in row else "-")
    Console(width=140).print(table)
    print("reopen: EmbeddedChain open (journal replay) + contract found + last round read, "
          "in a fresh process, imports excluded (wall clock, and CPU time: steadier on a loaded machine)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
