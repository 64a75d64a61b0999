"""The sweep's SQLite state: claims, attempts, failures kept with their errors, reclaiming
tasks from dead or silent workers, and what a new run does with what an old one left."""

from __future__ import annotations

import subprocess
import sys
import time

from swarm.lab import grid
from swarm.lab.state import FailureKind, State, TaskState


def planned(tmp_path, seeds=(0, 1, 2), max_attempts=2, name="exp"):
    experiment = grid.Experiment(name, "test.yaml", "lab_tasks:ok",
                                 {"seed": list(seeds), "merge": ["mean"]})
    plan = grid.plan([experiment], "inproc")
    state = State(tmp_path / "out", create=True)
    run = state.begin_run([experiment], plan, max_attempts=max_attempts, argv=["test"])
    return state, run, plan, experiment


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_claims_go_in_plan_order_to_one_claimant_each(tmp_path):
    state, run, plan, _ = planned(tmp_path)
    other = State(tmp_path / "out")
    first, second = state.claim(run), other.claim(run)
    assert [first.signature, second.signature] == [t.signature for t in plan.tasks[:2]]
    assert first.attempt == second.attempt == 1
    third = state.claim(run)
    assert state.claim(run) is None and third.signature == plan.tasks[2].signature
    assert state.counts(run).running == 3


def test_a_failure_is_retried_until_its_attempts_are_used_and_its_error_kept(tmp_path):
    state, run, plan, _ = planned(tmp_path, seeds=(0,), max_attempts=2)
    claim = state.claim(run)
    assert state.fail(claim, FailureKind.EXCEPTION, "Traceback\nValueError: one", 2, 0.1) \
        == TaskState.PENDING
    claim = state.claim(run)
    assert claim.attempt == 2
    assert state.fail(claim, FailureKind.EXCEPTION, "Traceback\nValueError: two", 2, 0.1) \
        == TaskState.FAILED
    assert state.claim(run) is None
    row = state.task(claim.signature)
    assert (row.state, row.attempts, row.error_kind) == (TaskState.FAILED, 2, "exception")
    assert row.error.endswith("ValueError: two")
    history = list(state.attempts_since(0))
    assert [(a.attempt, a.outcome) for a in history] == [(1, "retry"), (2, "failed")]
    assert history[0].error.endswith("ValueError: one")


def test_a_result_is_recorded_once(tmp_path):
    state, run, plan, _ = planned(tmp_path, seeds=(0,))
    claim = state.claim(run)
    assert state.finish(claim, {"accuracy": 0.9}, 1.5)
    assert not state.finish(claim, {"accuracy": 0.1}, 1.5)  # a late duplicate
    row = state.task(claim.signature)
    assert (row.state, row.result, row.wall_s) == (TaskState.DONE, {"accuracy": 0.9}, 1.5)


def test_a_task_whose_worker_is_gone_is_reclaimed_and_the_attempt_counted(tmp_path):
    state, run, plan, _ = planned(tmp_path, seeds=(0, 1), max_attempts=3)
    gone = state.claim(run, pid=dead_pid())
    alive = state.claim(run)  # this process: alive, heartbeat fresh
    found = state.reclaim(max_attempts=3, stale_after=300)
    assert found == [(gone.signature, FailureKind.WORKER_DIED)]
    row = state.task(gone.signature)
    assert (row.state, row.attempts, row.error_kind) == (TaskState.PENDING, 1, "worker_died")
    assert f"pid {gone.pid} is gone" in row.error
    assert state.task(alive.signature).state == TaskState.RUNNING
    again = state.claim(run)
    assert (again.signature, again.attempt) == (gone.signature, 2)


def test_a_silent_worker_is_reclaimed_after_the_stale_limit(tmp_path):
    state, run, plan, _ = planned(tmp_path, seeds=(0,))
    claim = state.claim(run)
    assert state.reclaim(max_attempts=2, stale_after=60) == []
    state.db.execute("UPDATE tasks SET heartbeat=? WHERE signature=?",
                     (time.time() - 61, claim.signature))
    assert state.reclaim(max_attempts=2, stale_after=60) == [
        (claim.signature, FailureKind.HEARTBEAT_STALE)]
    state.heartbeat([claim])  # the old claimant's beat no longer touches the task
    assert state.task(claim.signature).heartbeat is None


def test_an_interrupted_claim_is_given_back_without_using_an_attempt(tmp_path):
    state, run, plan, _ = planned(tmp_path, seeds=(0,))
    claim = state.claim(run)
    state.release(claim)
    row = state.task(claim.signature)
    assert (row.state, row.attempts) == (TaskState.PENDING, 0)


def test_a_new_run_retries_failed_tasks_with_attempts_left_and_keeps_done_ones(tmp_path):
    state, run, plan, experiment = planned(tmp_path, seeds=(0, 1, 2), max_attempts=1)
    done, failed, _ = (state.claim(run) for _ in range(3))
    state.finish(done, {"accuracy": 1.0}, 0.1)
    state.fail(failed, FailureKind.EXCEPTION, "boom", 1)
    state.release(_)
    # same limit: the failed task stays failed, the released one is pending
    run2 = state.begin_run([experiment], plan, max_attempts=1, argv=["again"])
    assert state.counts(run2) == state.counts(run2).__class__(pending=1, done=1, failed=1)
    # a higher limit gives the failed task its remaining try
    run3 = state.begin_run([experiment], plan, max_attempts=2, argv=["again"])
    assert state.counts(run3).pending == 2
    assert state.task(failed.signature).attempts == 1
    # --retry-failed: a fresh set of tries
    state.fail(state.claim(run3), FailureKind.EXCEPTION, "boom", 1)
    run4 = state.begin_run([experiment], plan, max_attempts=1, argv=["again"],
                           retry_failed=True)
    assert state.task(failed.signature).attempts == 0
    assert state.counts(run4).done == 1


def test_a_run_claims_only_its_own_tasks(tmp_path):
    state, run, plan, _ = planned(tmp_path, seeds=(0, 1), name="first")
    other = grid.Experiment("second", "b.yaml", "lab_tasks:ok", {"seed": [5]})
    run2 = state.begin_run([other], grid.plan([other], "inproc"), max_attempts=1, argv=["b"])
    claim = state.claim(run2)
    assert claim.params == {"seed": 5}
    assert state.claim(run2) is None
    assert state.counts(run).pending == 2
