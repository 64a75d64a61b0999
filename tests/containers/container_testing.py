"""Helpers for the container tests: what an engine lists, run-sl with --ml-image, a
sidecar program that sleeps until it is stopped."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

from swarm_testing import SN, Site, free_port


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
