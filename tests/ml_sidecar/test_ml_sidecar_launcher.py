"""`python -m ml_sidecar`: checks the wiring, then runs the user's program as __main__."""

from __future__ import annotations

import socket
import subprocess
import sys

from swarm_testing import REPO

PROGRAM = """
import os, sys
print("args", sys.argv[1:], "name", __name__)
sys.exit(int(os.environ.get("EXIT_WITH", "0")))
"""


def run(tmp_path, *args, **env):
    base = {"PATH": "/usr/bin:/bin", "MODEL_DIR": str(tmp_path / "model"), "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ml_sidecar", *args], cwd=tmp_path, text=True,
                          capture_output=True, timeout=60, env={**base, **env})


def test_runs_the_script_as_main_with_its_arguments_and_passes_its_exit_status(tmp_path):
    (tmp_path / "train.py").write_text(PROGRAM)
    done = run(tmp_path, "train.py", "--epochs", "3", SWARM_LOOPBACK="true", EXIT_WITH="3")
    assert done.returncode == 3, done.stderr
    assert "args ['--epochs', '3'] name __main__" in done.stdout
    assert (tmp_path / "model").is_dir()


def test_a_failing_program_shows_its_traceback_and_exits_1(tmp_path):
    (tmp_path / "train.py").write_text("raise RuntimeError('diverged at epoch 2')\n")
    done = run(tmp_path, "train.py", SWARM_LOOPBACK="true")
    assert done.returncode == 1
    assert "RuntimeError: diverged at epoch 2" in done.stderr


def test_without_the_sl_address_it_says_what_to_do(tmp_path):
    (tmp_path / "train.py").write_text(PROGRAM)
    done = run(tmp_path, "train.py")
    assert done.returncode == 2
    assert "SWARM_SL_ADDRESS is not set" in done.stderr and "run-sl" in done.stderr


def test_waits_for_the_sl_socket_and_names_it_when_it_never_appears(tmp_path):
    (tmp_path / "train.py").write_text(PROGRAM)
    missing = tmp_path / "sl.sock"
    done = run(tmp_path, "--wait-s", "0.5", "train.py", SWARM_SL_ADDRESS=f"unix://{missing}")
    assert done.returncode == 2
    assert str(missing) in done.stderr and "did not appear within 0.5 s" in done.stderr
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(missing))
    try:
        done = run(tmp_path, "--wait-s", "5", "train.py", SWARM_SL_ADDRESS=f"unix://{missing}")
    finally:
        listener.close()
    assert done.returncode == 0, done.stderr
    assert "ml_sidecar: running train.py" in done.stdout


def test_a_missing_script_is_named(tmp_path):
    done = run(tmp_path, "nope.py", SWARM_LOOPBACK="true")
    assert done.returncode == 2 and "training script nope.py not found" in done.stderr
