"""run-sn's command line: each start-up mistake gets one line saying what to fix."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from swarm_testing import READY, REPO, free_port, run_sn_argv


def run_sn(*args: str, timeout_s: float = 90, env: dict | None = None):
    return subprocess.run([sys.executable, "-m", "sn_node.cli", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **(env or {})})


def error_line(result) -> str:
    lines = [l for l in result.stderr.splitlines() if "error:" in l]
    assert lines, result.stderr
    return lines[-1]


def test_sentinel_or_sentinel_ip_is_required(sites):
    result = run_sn(*sites[0].tls_args("sn"))
    assert result.returncode == 2
    assert "give either --sentinel" in error_line(result)


@pytest.mark.parametrize("flag, value, message", [
    ("--cert", "/nonexistent/sn-1-cert.pem", "--cert"),
    ("--key", "/nonexistent/sn-1-key.pem", "--key"),
    ("--capath", "/nonexistent/capath", "--capath"),
])
def test_a_missing_certificate_file_names_the_flag(sites, flag, value, message):
    args = sites[0].tls_args("sn")
    args[args.index(flag) + 1] = value
    result = run_sn("--sentinel", *args)
    assert result.returncode == 2
    line = error_line(result)
    assert message in line and value in line


def test_an_sl_certificate_cannot_run_an_sn(sites):
    result = run_sn("--sentinel", *sites[0].tls_args("sl"))
    assert result.returncode == 2
    assert "is a 'sl' certificate" in error_line(result)


def test_bad_ports_and_addresses_are_named(sites):
    args = sites[0].tls_args("sn")
    assert "not a port number" in error_line(run_sn("--sentinel", *args, "--sn-api-port", "70000"))
    assert "--host-ip: 'nowhere' is not an IP address" in error_line(
        run_sn("--sentinel", *args, "--host-ip", "nowhere"))
    same = run_sn("--sentinel", *args, "--sn-api-port", "31000", "--sn-p2p-port", "31000")
    assert "need different ports" in error_line(same)


def test_a_port_in_use_is_reported(sites, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            run_sn_argv(sites[0], tmp_path / "sn", port, free_port(), "--sentinel"),
            cwd=REPO, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    line = error_line(result)
    assert f"127.0.0.1:{port}" in line and "--sn-api-port" in line and "in use" in line


def test_an_unreachable_sentinel_is_reported(sites, tmp_path):
    nobody = free_port()
    result = subprocess.run(
        run_sn_argv(sites[1], tmp_path / "sn", free_port(), free_port(),
                    "--sentinel-ip", "127.0.0.1", "--sentinel-api-port", str(nobody)),
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    line = error_line(result)
    assert f"sentinel at 127.0.0.1:{nobody}" in line and "nothing listens" in line


def test_detached_sn_starts_in_the_background_and_stop_swarm_stops_it(sites, tmp_path):
    env = {"SWARM_RUN_DIR": str(tmp_path / "run")}
    data_dir = tmp_path / "sn"
    port = free_port()
    result = subprocess.run(
        run_sn_argv(sites[0], data_dir, port, free_port(), "--sentinel", "-d"),
        cwd=REPO, capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert "started in the background" in result.stdout
    log = (data_dir / "sn.log").read_text()
    assert f"{READY} {port}" in log
    records = list((tmp_path / "run").glob("sn-*.json"))
    assert len(records) == 1
    pid = int((data_dir / "sn.pid").read_text())
    os.kill(pid, 0)  # the pid file names the live node

    stop = subprocess.run([sys.executable, "-m", "swarm.cli.stop"], cwd=REPO,
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert stop.returncode == 0
    assert "sn node alpha_sn-1" in stop.stdout and "stopped" in stop.stdout
    assert not list((tmp_path / "run").glob("*.json"))
    assert not (data_dir / "sn.pid").exists()
    with socket.socket() as probe:  # the port is free again: the node is gone
        probe.bind(("127.0.0.1", port))
    again = subprocess.run([sys.executable, "-m", "swarm.cli.stop"], cwd=REPO,
                           capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert "no detached swarm nodes are running" in again.stderr
