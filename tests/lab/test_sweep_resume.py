"""Running a sweep for real (spawned worker processes, the lab_tasks functions): failures
retried then recorded with their error, a worker killed under its task, and a sweep killed
mid-grid (SIGKILL) that a re-run finishes without redoing any finished task.

Each execution of a task leaves a marker file, so the counts below are what really ran."""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.lab import grid
from swarm.lab.state import State, StateError, TaskState
from swarm.lab.sweep import Options, run_sweep

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def markers(folder: Path, key) -> int:
    return len(list(folder.glob(f"{key}.*")))


def experiment(name: str, task: str, **params) -> grid.Experiment:
    return grid.Experiment(name, "test", f"lab_tasks:{task}",
                           {k: v if isinstance(v, list) else [v] for k, v in params.items()})


def sweep(out: Path, experiments: list[grid.Experiment], **options):
    plan = grid.plan(experiments, "inproc")
    return run_sweep(out, experiments, plan, Options(**options), argv=["test"])


def test_failures_are_retried_then_recorded_and_a_rerun_redoes_nothing(tmp_path):
    marks = tmp_path / "markers"
    experiments = [
        experiment("ok", "ok", markers=str(marks), key="ok", seed=[0, 1]),
        experiment("broken", "broken", markers=str(marks), key="broken"),
        experiment("flaky", "flaky", markers=str(marks), key="flaky", fail_times=2),
        experiment("killer", "kills_its_worker", markers=str(marks), key="killer"),
        experiment("wrong", "not_a_mapping", markers=str(marks), key="wrong"),
    ]
    out = tmp_path / "out"
    outcome = sweep(out, experiments, workers=2, retries=2)
    assert (outcome.counts.done, outcome.counts.failed) == (4, 2)
    assert not outcome.interrupted

    state = State(out)
    rows = {row.params["key"] + str(row.params.get("seed", "")): row for row in state.tasks()}
    broken = rows["broken"]
    assert (broken.state, broken.attempts, broken.error_kind) == (TaskState.FAILED, 3,
                                                                    "exception")
    assert "ValueError: broken task broken: bad parameter" in broken.error
    assert markers(marks, "broken") == 3  # 1 + --retries 2
    assert (rows["wrong"].state, rows["wrong"].error_kind) == (TaskState.FAILED, "bad_result")
    assert (rows["flaky"].state, rows["flaky"].attempts) == (TaskState.DONE, 3)
    assert markers(marks, "flaky") == 3
    killer = rows["killer"]
    assert (killer.state, killer.attempts) == (TaskState.DONE, 2)
    died = [a for a in state.attempts_since(0) if a.signature == killer.signature]
    assert died[0].error_kind == "worker_died" and "killed by SIGKILL" in died[0].error
    assert markers(marks, "ok") == 2
    assert rows["ok0"].result["accuracy"] > 0.5
    # the task's folder: its params, its output, what it wrote
    folder = out / "tasks" / rows["ok0"].signature[:16]
    assert "running in" in (folder / "task.log").read_text()
    assert (folder / "weights.bin").exists() and (folder / "result.json").exists()
    state.close()

    before = sorted(p.name for p in marks.iterdir())
    again = sweep(out, experiments, workers=2, retries=2)
    assert (again.counts.done, again.counts.failed) == (4, 2)
    assert sorted(p.name for p in marks.iterdir()) == before  # nothing ran again


def test_a_task_over_the_timeout_is_killed_and_recorded(tmp_path):
    marks = tmp_path / "markers"
    outcome = sweep(tmp_path / "out", [experiment("slow", "ok", markers=str(marks), key="s",
                                                  sleep=120)],
                    workers=1, retries=0, task_timeout=3)
    assert outcome.counts.failed == 1
    state = State(tmp_path / "out")
    [row] = state.tasks()
    assert row.error_kind == "timeout" and "over --task-timeout 3 s" in row.error


def run_cli(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)])}
    return subprocess.Popen([sys.executable, "-m", "swarm.lab.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            **popen)


@pytest.mark.parametrize("victim", ["process group", "sweep process", "ctrl-c"])
def test_a_sweep_killed_mid_grid_resumes_without_redoing_finished_tasks(tmp_path, victim):
    """SIGKILL of everything (a crash: the running tasks are left claimed by dead pids, and
    reclaimed), SIGKILL of the sweep alone (its workers then give their tasks back), or a
    Ctrl-C (SIGINT to the process group: the sweep stops its workers, which give their
    tasks back, and exits 130)."""
    marks = tmp_path / "markers"
    config = tmp_path / "grid.yaml"
    config.write_text(f"""
experiments:
  - name: grid
    task: lab_tasks:ok
    params:
      markers: {marks}
      sleep: 1.0
      key: [t0, t1, t2, t3, t4, t5, t6, t7]
""")
    out = tmp_path / "out"
    proc = run_cli(str(config), "--out", str(out), "--workers", "2", start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(StateError):  # not there yet
                state = State(out)
                done = state.counts().done
                state.close()
                if done >= 3:
                    break
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        else:
            pytest.fail("the sweep did not finish 3 tasks in time")
    finally:
        with contextlib.suppress(ProcessLookupError):
            if victim == "process group":
                os.killpg(proc.pid, signal.SIGKILL)
            elif victim == "ctrl-c":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate(timeout=120)
    if victim == "ctrl-c":
        assert proc.returncode == 130, output
        assert "interrupted; run the same command again" in output
    state = State(out)
    if victim == "sweep process":  # its orphaned workers give their tasks back and exit
        deadline = time.monotonic() + 60
        while state.counts().running and time.monotonic() < deadline:
            time.sleep(0.1)
    finished = {row.params["key"] for row in state.tasks() if row.state == TaskState.DONE}
    interrupted = {row.params["key"] for row in state.tasks()
                   if row.state == TaskState.RUNNING}
    assert len(finished) >= 3 and len(finished) < 8
    if victim != "process group":
        assert not interrupted  # given back, not left claimed
    state.close()
    started = {key: markers(marks, key) for key in (f"t{i}" for i in range(8))}

    proc = run_cli(str(config), "--out", str(out), "--workers", "2")
    output, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, output

    state = State(out)
    rows = {row.params["key"]: row for row in state.tasks()}
    assert all(row.state == TaskState.DONE for row in rows.values())
    for key in finished:  # ran once, before the kill
        assert markers(marks, key) == 1, key
    for key, row in rows.items():
        assert markers(marks, key) == started[key] + (key not in finished), key
    for key in interrupted:  # a crash costs the attempt; the reclaim says why
        assert rows[key].attempts == 2, key
    if victim != "process group":  # given back: the attempt did not count
        assert all(row.attempts == 1 for row in rows.values())
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert sorted(row["key"] for row in table) == [f"t{i}" for i in range(8)]
    assert all(row["state"] == "done" and float(row["accuracy"]) > 0 for row in table)
