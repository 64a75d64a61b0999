"""Detached node processes: start in the background, find them again, stop them.

`run-sn -d` / `run-sl -d` re-launch themselves as a detached child whose output
goes to a log file under the node's data directory, wait until the child prints
its ready line (or dies, in which case its last log lines become the error), and
record the child in a run directory so that `stop-swarm` can find it later.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


def run_dir() -> Path:
    """Where detached nodes register themselves (SWARM_RUN_DIR overrides it)."""
    return Path(os.environ.get("SWARM_RUN_DIR") or Path.home() / ".swarm" / "run")


@dataclass(frozen=True)
class DetachedNode:
    """One detached node as recorded in the run directory."""

    kind: str  # "sn" | "sl"
    name: str
    pid: int
    log: str
    record: Path
    pid_file: Path

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _is_not_zombie(self.pid)


def _is_not_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def detach(kind: str, name: str, argv: list[str], log_path: Path, ready_marker: str,
           timeout_s: float = 120.0) -> int:
    """Starts `argv` in a new session, logging to log_path; returns once it is ready.

    The child's pid goes to `<kind>.pid` beside the log, and a record of it into
    run_dir() for stop-swarm.

    Returns 0 when the child printed ready_marker, 1 when it exited or timed out
    first (after printing the end of its log to stderr so the user sees why).
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        start_offset = log.tell()
        child = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    pid_file = log_path.with_name(f"{kind}.pid")
    pid_file.write_text(f"{child.pid}\n")
    record = run_dir() / f"{kind}-{name}.json"
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"kind": kind, "name": name, "pid": child.pid,
                                  "log": str(log_path), "pid_file": str(pid_file),
                                  "argv": argv}))
    try:
        return _wait_ready(kind, name, child, log_path, start_offset, ready_marker, record,
                           pid_file, timeout_s)
    except KeyboardInterrupt:  # Ctrl-C while waiting: this launcher stops, the node runs on
        print(f"\nstopped waiting for {kind} node {name} (pid {child.pid}); it keeps "
              f"starting in the background, see {log_path}; stop it with `stop-swarm`",
              file=sys.stderr)
        return 130


def _wait_ready(kind: str, name: str, child: subprocess.Popen, log_path: Path,
                start_offset: int, ready_marker: str, record: Path, pid_file: Path,
                timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = _read_from(log_path, start_offset)
        if ready_marker in text:
            print(f"{kind} node {name} started in the background (pid {child.pid}); "
                  f"log: {log_path}; stop it with `stop-swarm`")
            return 0
        if child.poll() is not None:
            record.unlink(missing_ok=True)
            pid_file.unlink(missing_ok=True)
            tail = "\n".join(text.strip().splitlines()[-15:])
            print(f"{kind} node {name} exited with status {child.returncode} before it "
                  f"was ready; the end of {log_path}:\n{tail}", file=sys.stderr)
            return 1
        time.sleep(0.1)
    print(f"{kind} node {name} (pid {child.pid}) printed no ready line within "
          f"{timeout_s:.0f} s; it is still running, see {log_path}", file=sys.stderr)
    return 1


def _read_from(path: Path, offset: int) -> str:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def detached_nodes(kind: str | None = None) -> list[DetachedNode]:
    """Every recorded detached node (of one kind, if given); stale records are removed."""
    nodes = []
    for record in sorted(run_dir().glob("*.json")):
        try:
            data = json.loads(record.read_text())
            node = DetachedNode(data["kind"], data["name"], int(data["pid"]), data["log"],
                                record, Path(data.get("pid_file", "")))
        except (OSError, ValueError, KeyError):
            continue
        if not node.alive():
            record.unlink(missing_ok=True)
            continue
        if kind is None or node.kind == kind:
            nodes.append(node)
    return nodes


def stop_nodes(nodes: list[DetachedNode], grace_s: float = 15.0) -> list[DetachedNode]:
    """SIGTERM each node, wait up to grace_s, SIGKILL what is left; returns the killed ones."""
    for node in nodes:
        _signal(node.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(n.alive() for n in nodes):
        time.sleep(0.1)
    killed = [n for n in nodes if n.alive()]
    for node in killed:
        _signal(node.pid, signal.SIGKILL)
    for node in nodes:
        node.record.unlink(missing_ok=True)
        if node.pid_file.name:
            node.pid_file.unlink(missing_ok=True)
    return killed


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
