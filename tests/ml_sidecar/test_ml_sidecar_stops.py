"""`python -m ml_sidecar` stops its program when its SL node stops: on SIGTERM (through
the program's finally blocks, as a container's PID 1 too) and, by its watchdog, when the
SL node's socket stops answering (the node was SIGKILLed: no orphan keeps training)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from swarm_testing import REPO

SLEEPER = """
import time
try:
    print("sleeping", flush=True)
    time.sleep(3600)
finally:
    print("cleanup ran", flush=True)
"""


def start(tmp_path, *args, **env):
    (tmp_path / "sleeper.py").write_text(SLEEPER)
    base = {"PATH": "/usr/bin:/bin", "MODEL_DIR": str(tmp_path / "model"), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "ml_sidecar", *args, "sleeper.py"],
                            cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**base, **env})
    assert proc.stdout.readline().startswith("ml_sidecar: running sleeper.py")
    assert proc.stdout.readline() == "sleeping\n"
    return proc


def listening_socket(path) -> socket.socket:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.listen()
    return listener


def test_sigterm_ends_the_program_through_its_finally_blocks(tmp_path):
    proc = start(tmp_path, SWARM_LOOPBACK="true")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "cleanup ran" in out


def test_the_watchdog_stops_the_program_when_the_sl_node_stops_answering(tmp_path):
    path = tmp_path / "sl.sock"
    listener = listening_socket(path)
    proc = start(tmp_path, "--watch-s", "0.2", SWARM_SL_ADDRESS=f"unix://{path}")
    time.sleep(1.0)  # several checks while the node answers: nothing happens
    assert proc.poll() is None
    listener.close()  # as after a SIGKILL: the file stays, connections are refused
    assert path.exists()
    started = time.monotonic()
    out, err = proc.communicate(timeout=15)
    assert time.monotonic() - started < 5
    assert proc.returncode == 128 + signal.SIGTERM
    assert f"the SL node at {path} stopped answering" in err
    assert "cleanup ran" in out


def test_no_watchdog_with_watch_s_0(tmp_path):
    path = tmp_path / "sl.sock"
    listening_socket(path).close()
    proc = start(tmp_path, "--watch-s", "0", SWARM_SL_ADDRESS=f"unix://{path}")
    try:
        time.sleep(1.5)
        assert proc.poll() is None
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=10)
