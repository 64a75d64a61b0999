"""Helpers for the container tests: what an engine lists, run-sl with --ml-image."""

from __future__ import annotations

import subprocess
import sys
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
