"""`swarm sweep --ray ADDRESS`: the tasks run on a Ray cluster, here a one-CPU head the test
starts on loopback (in its own process group, which the test ends), with the same retries
and records as the local workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from swarm_testing import free_port

ray = pytest.importorskip("ray", reason="the ray extra is not installed")

from swarm.lab import grid  # noqa: E402
from swarm.lab.state import State, TaskState  # noqa: E402
from swarm.lab.sweep import Options, SweepError, run_sweep  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


@pytest.fixture
def ray_head():
    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip(f"no ray command beside {sys.executable}")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths are long
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
           "RAY_USAGE_STATS_ENABLED": "0"}
    head = subprocess.Popen(
        [str(ray_cli), "start", "--head", "--block", "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
         "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True)  # its daemons share this process group, ended below
    try:
        yield f"127.0.0.1:{port}"
    finally:
        for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(head.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                head.wait(wait)
                break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(head.pid, signal.SIGKILL)  # daemons left behind by `ray start`
        head.wait()
        shutil.rmtree(temp, ignore_errors=True)


def test_tasks_run_on_a_ray_cluster_with_retries(ray_head, tmp_path):
    marks = tmp_path / "markers"
    experiments = [
        grid.Experiment("ok", "test", "lab_tasks:ok",
                        {"markers": [str(marks)], "key": ["ok"], "seed": [0, 1]}),
        grid.Experiment("flaky", "test", "lab_tasks:flaky",
                        {"markers": [str(marks)], "key": ["flaky"], "fail_times": [1]}),
    ]
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while True:  # the head takes a while to come up on a busy machine
        try:
            outcome = run_sweep(out, experiments, grid.plan(experiments, "inproc"),
                                Options(retries=1, ray_address=ray_head), argv=["test"])
            break
        except SweepError:  # not up yet
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    assert (outcome.counts.done, outcome.counts.failed) == (3, 0)
    state = State(out)
    rows = {(row.params["key"], row.params.get("seed")): row for row in state.tasks()}
    assert all(row.state == TaskState.DONE for row in rows.values())
    assert rows[("flaky", None)].attempts == 2
    assert rows[("ok", 0)].result["backend_seen"] == "inproc"
    # the sweep process held the claims; the work ran in Ray's worker processes
    attempts = list(state.attempts_since(0))
    assert {a.pid for a in attempts} == {os.getpid()}
    executors = {p.name.split(".")[1] for p in marks.iterdir()}
    assert str(os.getpid()) not in executors
    assert len(list(marks.glob("ok.*"))) == 2 and len(list(marks.glob("flaky.*"))) == 2
