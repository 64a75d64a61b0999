"""Helpers for the container tests: what an engine lists, run-sl with --ml-image, a
sidecar program that sleeps until it is stopped."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from swarm_testing import REPO, SN, Site, free_port


def containers_named(engine: str, name: str) -> list[str]:
    """Containers (running or not) whose name is exactly `name`."""
    listed = subprocess.run([engine, "ps", "-a", "--filter", f"name=^{name}$", "--format",
                             "{{.Names}}"], capture_output=True, text=True, timeout=60)
    return listed.stdout.split()


def run_sl_container_argv(site: Site, sn: SN, data_dir: Path, image: str, engine: str,
                          *ml_args: str) -> list[str]:
    """run-sl whose sidecar runs in `image` (the test's own Python runs the SL node)."""
    return [sys.executable, "-m", "sl_node.cli", *site.tls_args("sl"),
            "--host-ip", "127.0.0.1", "--sn-ip", "127.0.0.1", "--sn-api-port", str(sn.api_port),
            "--sl-fs-port", str(free_port()), "--data-dir", str(data_dir),
            "--ml-image", image, "--ml-engine", engine, *ml_args]


def example_args(example: str, data: Path, model: Path) -> list[str]:
    """--ml-* options running examples/EXAMPLE/train.py as an established product's user
    writes them: the code and data mounted read-only, the model directory writable."""
    return ["--ml-w", f"/code/{example}", "--ml-cmd", "train.py",
            "--ml-v", f"{REPO / 'examples'}:/code:ro", "--ml-v", f"{data}:/data:ro",
            "--ml-v", f"{model}:/model"]


def sleeper_args(tmp_path: Path) -> list[str]:
    """--ml-* options running SLEEPER from tmp_path/code, tmp_path/ro mounted read-only."""
    code, ro = tmp_path / "code", tmp_path / "ro"
    code.mkdir()
    ro.mkdir()
    (code / "sleeper.py").write_text(SLEEPER)
    return ["--ml-v", f"{code}:/job", "--ml-v", f"{ro}:/ro:ro", "--ml-w", "/job",
            "--ml-e", "GREETING=hello"]


def assert_sleeper_started(output: str, tmp_path: Path) -> None:
    """SLEEPER's checks: :ro, -w and -e reached the container (sleeper_args' options)."""
    assert "ro-check: EROFS" in output  # :ro survived into the container
    assert "cwd /job GREETING hello" in output
    assert not (tmp_path / "ro" / "probe").exists()


def seconds_until_gone(engine: str, name: str, since: float, timeout_s: float = 60) -> float:
    """Seconds from `since` (time.monotonic()) until no container is named `name`."""
    while containers_named(engine, name) and time.monotonic() - since < timeout_s:
        time.sleep(0.5)
    return time.monotonic() - since


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# Checks that :ro, -w and -e reached the container, then sleeps until it is stopped.
SLEEPER = """
import errno, os, sys, time
try:
    open("/ro/probe", "w")
    print("ro-check: writable", flush=True)
except OSError as error:
    print("ro-check:", errno.errorcode[error.errno], flush=True)
print("cwd", os.getcwd(), "GREETING", os.environ.get("GREETING"), flush=True)
try:
    print("sleeping", flush=True)
    time.sleep(3600)
finally:
    print("sleeper: stopping", flush=True)
"""
