"""The ML sidecar's launcher: runs the user's training program next to its SL node.

`python -m ml_sidecar train.py [ARGS...]` (or `-m package.module`) is the sidecar
image's entrypoint; the SL node starts it with `--ml-cmd`. Before the program runs,
the launcher checks what a SwarmCallback will need, so a mis-wired sidecar fails
with one line that says what is missing instead of a traceback mid-training:
- the SL node's address ($SWARM_SL_ADDRESS, set by run-sl), and for a unix socket
  that the socket appears within --wait-s (a container may start before its node);
- $MODEL_DIR is creatable (the final model is saved under it).
The program then runs as __main__ in this process; its exit status is the sidecar's,
which run-sl passes on as its own.

It stops when its SL node stops: SIGTERM (or SIGHUP) ends the program with SystemExit
(its `finally` blocks run) even as a container's PID 1, where the default action would
be ignored; and a watchdog ends it when the SL node's socket stops answering (the node
was killed, say by SIGKILL), so that no orphaned sidecar keeps training.
"""

from __future__ import annotations

import argparse
import os
import runpy
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path

ADDRESS_ENV = "SWARM_SL_ADDRESS"
LOOPBACK_ENV = "SWARM_LOOPBACK"
SHOWN_ENV = ("MODEL_DIR", "DATA_DIR", "MAX_EPOCHS", "MIN_PEERS")
# Consecutive refused connections before the watchdog decides the SL node is gone.
WATCHDOG_MISSES = 2
# How long the program gets to end after the watchdog's SIGTERM before the process exits.
WATCHDOG_GRACE_S = 10.0


class SidecarSetupError(Exception):
    """The sidecar cannot start its program; the message says what to fix."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ml_sidecar", description="Run a training program as a swarm ML sidecar.")
    parser.add_argument("--wait-s", type=float, default=60.0, metavar="S",
                        help="how long to wait for the SL node's socket (default 60)")
    parser.add_argument("--watch-s", type=float, default=2.0, metavar="S",
                        help="check every S seconds that the SL node still answers and stop "
                             "when it does not (default 2; 0: never)")
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a module (as python -m does) instead of a script")
    parser.add_argument("program", nargs=argparse.REMAINDER,
                        help="the training script and its arguments")
    args = parser.parse_args(argv)
    if args.module is None and not args.program:
        parser.error("give the training script to run (or -m MODULE)")
    return args


def wait_for_node(address: str, wait_s: float) -> Path | None:
    """Waits for a unix-socket SL node to be listening and returns the socket's path;
    TCP addresses are left to gRPC (None)."""
    if not address:
        raise SidecarSetupError(
            f"${ADDRESS_ENV} is not set: start this sidecar through run-sl (it sets the "
            f"SL node's address), or set {LOOPBACK_ENV}=true to train without the swarm")
    if not address.startswith("unix:"):
        return None
    path = Path(address.split(":", 1)[1].removeprefix("//"))
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() >= deadline:
            raise SidecarSetupError(
                f"the SL node's socket {path} (from ${ADDRESS_ENV}) did not appear within "
                f"{wait_s:g} s: is run-sl running, and is its socket directory mounted here?")
        time.sleep(0.1)
    return path


def _stop_on_signal(signum, _frame) -> None:
    raise SystemExit(128 + signum)


def install_stop_handlers() -> None:
    """SIGTERM/SIGHUP raise SystemExit in the main thread: the program ends through its
    `finally` blocks, also as PID 1 (which ignores signals that have no handler)."""
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _stop_on_signal)


def node_answers(path: Path) -> bool:
    """False only when the SL node is certainly gone: its socket refuses connections or
    has vanished. A slow answer counts as alive."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5.0)
            probe.connect(str(path))
        return True
    except (ConnectionRefusedError, FileNotFoundError):
        return False
    except OSError:
        return True


def start_watchdog(path: Path, every_s: float) -> threading.Thread:
    """Stops this sidecar when its SL node stops answering: SIGTERM to itself (the program
    ends as on any SIGTERM), then, if the program is stuck, exit after a grace period."""

    def watch() -> None:
        misses = 0
        while True:
            time.sleep(every_s)
            misses = 0 if node_answers(path) else misses + 1
            if misses >= WATCHDOG_MISSES:
                break
        print(f"ml_sidecar: the SL node at {path} stopped answering: stopping the "
              f"training program", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(WATCHDOG_GRACE_S)
        print("ml_sidecar: the training program did not stop: exiting", file=sys.stderr,
              flush=True)
        os._exit(128 + signal.SIGTERM)

    thread = threading.Thread(target=watch, name="sl-watchdog", daemon=True)
    thread.start()
    return thread


def check_model_dir() -> None:
    model_dir = Path(os.environ.get("MODEL_DIR") or "model")
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise SidecarSetupError(f"cannot create MODEL_DIR {model_dir}: {error.strerror}") from None


def _run(args: argparse.Namespace) -> int:
    try:
        if args.module:
            sys.argv = [args.module, *args.program]
            runpy.run_module(args.module, run_name="__main__", alter_sys=True)
        else:
            script = Path(args.program[0])
            if not script.is_file():
                raise SidecarSetupError(f"training script {script} not found "
                                        f"(working directory {Path.cwd()})")
            sys.argv = [str(script), *args.program[1:]]
            sys.path.insert(0, str(script.resolve().parent))
            runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        code = done.code
        if code is None or isinstance(code, int):
            return code or 0
        print(code, file=sys.stderr)
        return 1
    except SidecarSetupError:
        raise
    except BaseException:  # the user's program failed: show its traceback, exit non-zero
        traceback.print_exc()
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    loopback = os.environ.get(LOOPBACK_ENV, "").strip().lower() == "true"
    install_stop_handlers()
    try:
        if not loopback:
            path = wait_for_node(os.environ.get(ADDRESS_ENV, "").strip(), args.wait_s)
            if path is not None and args.watch_s > 0:
                start_watchdog(path, args.watch_s)
        check_model_dir()
        shown = ", ".join(f"{k}={os.environ[k]}" for k in SHOWN_ENV if k in os.environ)
        program = args.module or args.program[0]
        print(f"ml_sidecar: running {program}" + (f" ({shown})" if shown else "")
              + (" without the swarm (SWARM_LOOPBACK)" if loopback else ""), flush=True)
        return _run(args)
    except SidecarSetupError as error:
        print(f"ml_sidecar: error: {error}", file=sys.stderr)
        return 2
