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
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import time
import traceback
from pathlib import Path

ADDRESS_ENV = "SWARM_SL_ADDRESS"
LOOPBACK_ENV = "SWARM_LOOPBACK"
SHOWN_ENV = ("MODEL_DIR", "DATA_DIR", "MAX_EPOCHS", "MIN_PEERS")


class SidecarSetupError(Exception):
    """The sidecar cannot start its program; the message says what to fix."""


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="ml_sidecar", description="Run a training program as a swarm ML sidecar.")
    parser.add_argument("--wait-s", type=float, default=60.0, metavar="S",
                        help="how long to wait for the SL node's socket (default 60)")
    parser.add_argument("-m", dest="module", metavar="MODULE",
                        help="run a module (as python -m does) instead of a script")
    parser.add_argument("program", nargs=argparse.REMAINDER,
                        help="the training script and its arguments")
    args = parser.parse_args(argv)
    if args.module is None and not args.program:
        parser.error("give the training script to run (or -m MODULE)")
    return args


def wait_for_node(address: str, wait_s: float) -> None:
    """Waits for a unix-socket SL node to be listening; TCP addresses are left to gRPC."""
    if not address:
        raise SidecarSetupError(
            f"${ADDRESS_ENV} is not set: start this sidecar through run-sl (it sets the "
            f"SL node's address), or set {LOOPBACK_ENV}=true to train without the swarm")
    if not address.startswith("unix:"):
        return
    path = Path(address.split(":", 1)[1].removeprefix("//"))
    deadline = time.monotonic() + wait_s
    while not path.exists():
        if time.monotonic() >= deadline:
            raise SidecarSetupError(
                f"the SL node's socket {path} (from ${ADDRESS_ENV}) did not appear within "
                f"{wait_s:g} s: is run-sl running, and is its socket directory mounted here?")
        time.sleep(0.1)


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
    try:
        if not loopback:
            wait_for_node(os.environ.get(ADDRESS_ENV, "").strip(), args.wait_s)
        check_model_dir()
        shown = ", ".join(f"{k}={os.environ[k]}" for k in SHOWN_ENV if k in os.environ)
        program = args.module or args.program[0]
        print(f"ml_sidecar: running {program}" + (f" ({shown})" if shown else "")
              + (" without the swarm (SWARM_LOOPBACK)" if loopback else ""), flush=True)
        return _run(args)
    except SidecarSetupError as error:
        print(f"ml_sidecar: error: {error}", file=sys.stderr)
        return 2
