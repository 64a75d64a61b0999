"""The sweep runner: worker processes claim tasks from the state database and run them.

Each worker (a `multiprocessing` spawn process) loops: claim the run's first pending task,
run its task function in a fresh folder `OUT/tasks/<signature[:16]>/` with its output in
`task.log` there, keep a heartbeat while it runs, record the result or the error, until
nothing is left to claim. The parent only watches: it starts workers while work is pending,
reclaims the task of a worker that died (and of any claimant whose pid is gone or whose
heartbeat is stale), kills a task past `task_timeout`, and shows progress. A Ctrl-C gives
the running tasks back unfinished (their attempt not counted); a SIGKILL leaves them
claimed by dead pids, which the next run reclaims.

The task function is `module:function`, called as
`function(params, backend=backend, workdir=workdir)` and returning a mapping of metrics.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import math
import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from swarm.lab.grid import Experiment, Plan
from swarm.lab.state import (AttemptRow, Claim, Counts, FailureKind, State, TaskState)

HEARTBEAT_S = 5.0
POLL_S = 0.25
RECLAIM_EVERY_S = 5.0
BACKENDS = ("inproc", "process")


class TaskResultError(TypeError):
    """The task function returned something that is not a mapping of JSON values."""


class SweepError(RuntimeError):
    """The sweep cannot go on (its workers keep dying before they run anything)."""


class Interrupted(BaseException):
    """SIGTERM in a worker while its task runs: give the claim back and stop."""


def load_task(ref: str) -> Callable[..., Any]:
    """The function a "module:function" reference names (ImportError/AttributeError)."""
    module_name, _, name = ref.partition(":")
    module = importlib.import_module(module_name)
    function = getattr(module, name, None)
    if not callable(function):
        raise AttributeError(f"{ref}: module {module_name} has no function {name!r}")
    return function


def check_tasks(experiments: list[Experiment]) -> None:
    """Every experiment's task function imports here; ValueError naming the experiment."""
    for experiment in experiments:
        try:
            load_task(experiment.task)
        except Exception as error:  # noqa: BLE001 - any import failure is the user's to see
            raise ValueError(f"{experiment.source}: experiment {experiment.name!r}: task "
                             f"{experiment.task!r} does not load: "
                             f"{type(error).__name__}: {error}") from None


def task_dir(out_dir: Path, signature: str) -> Path:
    return Path(out_dir) / "tasks" / signature[:16]


def _json_result(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict) or not all(isinstance(key, str) for key in result):
        raise TaskResultError(f"the task returned {type(result).__name__}, not a mapping "
                              "of metric names (strings) to values")
    # NaN stays NaN (a diverged run is a result); anything else must be plain JSON.
    return {key: _plain(value, key) for key, value in result.items()}


def _plain(value: Any, where: str) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return value
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalars
    if hasattr(value, "tolist") and callable(value.tolist):
        value = value.tolist()  # numpy arrays
    if isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise TaskResultError(f"result {where}: keys must be strings")
        return {key: _plain(item, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TaskResultError(f"result {where}: {type(value).__name__} is not a JSON value")


def call_task(ref: str, params: dict[str, Any], backend: str, workdir: Path) -> dict:
    """Runs one task in `workdir` (emptied first) and returns its metrics, JSON-clean.

    Shared by the local workers and the Ray backend; raises what the task raises.
    """
    workdir = Path(workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    (workdir / "params.json").write_text(json.dumps(params, indent=1, sort_keys=True))
    function = load_task(ref)
    fresh = json.loads(json.dumps(params))  # the task may change its copy
    result = _json_result(function(fresh, backend=backend, workdir=workdir))
    (workdir / "result.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    return result


@contextlib.contextmanager
def _output_to(path: Path):
    """Points this process's stdout and stderr (the file descriptors) at `path`."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


class _Heartbeat(threading.Thread):
    def __init__(self, state: State, claims: Callable[[], list[Claim]], every: float):
        super().__init__(daemon=True, name="sweep-heartbeat")
        self.state, self.claims, self.every = state, claims, every
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.every):
            claims = self.claims()
            if claims:
                with contextlib.suppress(Exception):  # a busy database: the next beat
                    self.state.heartbeat(claims)

    def stop(self) -> None:
        self.stopped.set()


class _Termination:
    """SIGTERM in a worker: while a task function runs it raises Interrupted there (the
    claim is given back); anywhere else (claiming, recording) it only asks the worker to
    stop before its next claim, so a claim is never left half taken or a result half kept."""

    requested = False
    in_task = False

    @classmethod
    def handle(cls, signum, frame) -> None:
        cls.requested = True
        if cls.in_task:
            cls.in_task = False
            raise Interrupted()


def execute(state: State, claim: Claim, out_dir: Path, max_attempts: int,
            heartbeat_s: float = HEARTBEAT_S) -> TaskState:
    """Runs one claimed task in this process and records what came of it."""
    workdir = task_dir(out_dir, claim.signature)
    beat_state = State(out_dir)
    beat = _Heartbeat(beat_state, lambda: [claim], heartbeat_s)
    beat.start()
    started = time.monotonic()
    try:
        workdir.parent.mkdir(parents=True, exist_ok=True)
        log = workdir.parent / f"{workdir.name}.log"
        with _output_to(log):
            print(f"=== attempt {claim.attempt} pid {os.getpid()} "
                  f"{time.strftime('%Y-%m-%dT%H:%M:%S')}", flush=True)
            if _Termination.requested:
                raise Interrupted()
            _Termination.in_task = True
            try:
                result = call_task(claim.task, claim.params, claim.backend, workdir)
            finally:
                _Termination.in_task = False
        shutil.move(log, workdir / "task.log")
    except Interrupted:
        state.release(claim)
        raise
    except TaskResultError as error:
        return state.fail(claim, FailureKind.BAD_RESULT, str(error), max_attempts,
                          time.monotonic() - started)
    except BaseException:  # noqa: BLE001 - SystemExit and KeyboardInterrupt from a task too
        return state.fail(claim, FailureKind.EXCEPTION, traceback.format_exc(), max_attempts,
                          time.monotonic() - started)
    finally:
        beat.stop()
        beat.join()
        beat_state.close()
    state.finish(claim, result, time.monotonic() - started)
    return TaskState.DONE


def worker_main(out_dir: str, run: int, max_attempts: int, heartbeat_s: float,
                parent: int | None = None) -> None:
    """A worker process: claims and runs the run's pending tasks until none is left, or
    until told to stop (SIGTERM) or its parent, the sweep, is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, _Termination.handle)
    state = State(out_dir)
    try:
        while not _Termination.requested:
            if parent is not None and os.getppid() != parent:
                break
            if (claim := state.claim(run)) is None:
                break
            execute(state, claim, Path(out_dir), max_attempts, heartbeat_s)
    except Interrupted:
        pass
    finally:
        state.close()


def describe_exit(code: int | None) -> str:
    if code is None:
        return "still running"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
        return f"killed by signal {-code}"
    return f"exited with status {code}"


@dataclass
class Options:
    workers: int | None = None  # None: one per CPU here, or the Ray cluster's CPUs
    backend: str = "inproc"
    retries: int = 3
    stale_after: float = 300.0
    task_timeout: float | None = None
    heartbeat_s: float = HEARTBEAT_S
    retry_failed: bool = False
    ray_address: str | None = None

    @property
    def max_attempts(self) -> int:
        return self.retries + 1


@dataclass
class Outcome:
    run: int
    counts: Counts
    interrupted: bool = False
    reclaimed: list = field(default_factory=list)


class Watcher:
    """What the runner tells as it goes: counts, and every attempt that ended."""

    def start(self, counts: Counts) -> None: ...
    def update(self, counts: Counts, ended: list[AttemptRow]) -> None: ...
    def stop(self, counts: Counts) -> None: ...


def run_sweep(out_dir: Path, experiments: list[Experiment], plan: Plan, options: Options,
              *, watcher: Watcher | None = None, argv: list[str] | None = None) -> Outcome:
    """Plans the experiments into `out_dir` and runs what of them is not finished.

    Returns when every task of the plan is done or failed, or (outcome.interrupted) on
    Ctrl-C, after the workers gave their tasks back.
    """
    out_dir = Path(out_dir)
    watcher = watcher or Watcher()
    state = State(out_dir, create=True)
    run = state.begin_run(experiments, plan, max_attempts=options.max_attempts,
                          argv=list(sys.argv if argv is None else argv),
                          retry_failed=options.retry_failed)
    last = state.last_attempt_id()
    outcome = Outcome(run, state.counts(run))
    # leftovers of a crashed or killed sweep: their claimants are gone or silent
    outcome.reclaimed += state.reclaim(options.max_attempts, options.stale_after)

    def tick() -> Counts:
        nonlocal last
        ended = list(state.attempts_since(last))
        if ended:
            last = ended[-1].id
        counts = state.counts(run)
        watcher.update(counts, ended)
        return counts

    watcher.start(state.counts(run))
    try:
        if options.ray_address:
            from swarm.lab.ray_backend import run_on_ray
            run_on_ray(state, run, out_dir, options, tick)
        else:
            _run_local(state, run, out_dir, options, tick)
        tick()
    except KeyboardInterrupt:
        outcome.interrupted = True
    finally:
        outcome.counts = state.counts(run)
        watcher.stop(outcome.counts)
        state.close()
    return outcome


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the sweep dies (even by SIGKILL), so it gives its
    task back instead of running on, orphaned."""
    with contextlib.suppress(Exception):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _worker_entry(out_dir: str, run: int, max_attempts: int, heartbeat_s: float,
                  parent: int) -> None:
    _die_with_parent()
    worker_main(out_dir, run, max_attempts, heartbeat_s, parent)


def _run_local(state: State, run: int, out_dir: Path, options: Options,
               tick: Callable[[], Counts]) -> None:
    context = multiprocessing.get_context("spawn")
    slots = options.workers or len(os.sched_getaffinity(0))
    workers: dict[int, multiprocessing.Process] = {}
    last_reclaim = time.monotonic()
    last_attempt, barren_deaths = state.last_attempt_id(), 0
    try:
        while True:
            dead = {}
            for pid, proc in list(workers.items()):
                if not proc.is_alive():
                    proc.join()
                    if proc.exitcode != 0:
                        dead[pid] = f"worker pid {pid} {describe_exit(proc.exitcode)}"
                    del workers[pid]
            if (latest := state.last_attempt_id()) != last_attempt:
                last_attempt, barren_deaths = latest, 0
            barren_deaths += len(dead)
            if barren_deaths > 3 * slots:  # e.g. a worker that cannot start at all
                raise SweepError(f"{barren_deaths} worker processes exited with no task "
                                 f"attempted; the last: {next(iter(dead.values()))}")
            if dead or time.monotonic() - last_reclaim > RECLAIM_EVERY_S:
                state.reclaim(options.max_attempts, options.stale_after, dead)
                last_reclaim = time.monotonic()
            if options.task_timeout:
                _kill_overdue(state, workers, options)
            counts = tick()
            if counts.pending == 0 and counts.running == 0:
                return
            for _ in range(min(slots, counts.pending) - len(workers)):
                proc = context.Process(target=_worker_entry, name="sweep-worker", daemon=True,
                                       args=(str(out_dir), run, options.max_attempts,
                                             options.heartbeat_s, os.getpid()))
                proc.start()
                workers[proc.pid] = proc
            time.sleep(POLL_S)
    finally:
        _stop(workers.values())


def _kill_overdue(state: State, workers: dict[int, multiprocessing.Process],
                  options: Options) -> None:
    now = time.time()
    for row in state.running():
        if row.pid in workers and row.started and now - row.started > options.task_timeout:
            claim = Claim(row.signature, row.task, row.backend, row.params, row.attempts,
                          row.pid)
            state.fail(claim, FailureKind.TIMEOUT,
                       f"ran {now - row.started:.0f} s, over --task-timeout "
                       f"{options.task_timeout:g} s; worker pid {row.pid} killed",
                       options.max_attempts, now - row.started)
            with contextlib.suppress(ProcessLookupError):
                os.kill(row.pid, signal.SIGKILL)


def _stop(workers) -> None:
    """SIGTERM (the workers give their tasks back), then SIGKILL what still runs."""
    workers = list(workers)
    for proc in workers:
        if proc.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in workers:
        proc.join(max(0.0, deadline - time.monotonic()))
        if proc.is_alive():
            proc.kill()
            proc.join()
