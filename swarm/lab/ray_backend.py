"""`swarm sweep --ray ADDRESS`: the sweep's tasks run as Ray tasks on a cluster.

The sweep process claims tasks (under its own pid, heartbeating for all of them) and keeps
up to --workers of them in flight on the cluster (default: the cluster's CPUs); each Ray
task calls the same `call_task` as a local worker. Ray's own retries are off: a failure is
recorded and retried by the sweep like any other. The task's module must be importable on
the cluster's workers (swarm installed there, or on their PYTHONPATH); its working folder
is the sweep's `OUT/tasks/<signature[:16]>/` when the worker can create it (a shared or the
same file system), else a temporary folder on the worker, and only the metrics come back.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from swarm.lab.state import Claim, Counts, FailureKind, State
from swarm.lab.sweep import SweepError

try:
    import ray
except ImportError:  # the `ray` extra is not installed
    ray = None


class RayUnavailable(SweepError):
    """--ray without the ray extra."""


def _remote_call(ref: str, params: dict, backend: str, workdir: str) -> dict:
    """Runs on a Ray worker. Returns {"ok": metrics} or {"error": text, "kind": ...}."""
    from swarm.lab.sweep import TaskResultError, call_task

    path = Path(workdir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:
        path = Path(tempfile.mkdtemp(prefix="swarm-sweep-")) / path.name
    try:
        return {"ok": call_task(ref, params, backend, path)}
    except TaskResultError as error:
        return {"error": str(error), "kind": FailureKind.BAD_RESULT.value}
    except Exception:  # noqa: BLE001 - the task's failure, recorded with its traceback
        return {"error": traceback.format_exc(), "kind": FailureKind.EXCEPTION.value}


def connect(address: str) -> int:
    """Joins the cluster at `address`; returns its CPU count."""
    if ray is None:
        raise RayUnavailable("--ray needs Ray: pip install 'swarm[ray]'")
    if not ray.is_initialized():
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=False)
        except Exception as error:  # noqa: BLE001 - Ray's own types vary by version
            raise SweepError(f"--ray {address}: cannot join the cluster: "
                             f"{type(error).__name__}: {error}") from None
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def run_on_ray(state: State, run: int, out_dir: Path, options, tick: Callable[[], Counts]
               ) -> None:
    from swarm.lab.sweep import POLL_S, RECLAIM_EVERY_S, task_dir

    cpus = connect(options.ray_address)
    slots = options.workers or cpus
    remote = ray.remote(num_cpus=1, max_retries=0)(_remote_call)
    in_flight: dict[object, tuple[Claim, float]] = {}
    last_beat = last_reclaim = time.monotonic()
    try:
        while True:
            while len(in_flight) < slots and (claim := state.claim(run)) is not None:
                workdir = str(task_dir(out_dir, claim.signature).resolve())
                future = remote.remote(claim.task, claim.params, claim.backend, workdir)
                in_flight[future] = (claim, time.monotonic())
            if in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_S)
            else:
                ready = []
                time.sleep(POLL_S)
            for future in ready:
                claim, started = in_flight.pop(future)
                wall = time.monotonic() - started
                try:
                    answer = ray.get(future)
                except Exception as error:  # noqa: BLE001 - the Ray worker died
                    state.fail(claim, FailureKind.WORKER_DIED,
                               f"Ray task failed: {type(error).__name__}: {error}",
                               options.max_attempts, wall)
                    continue
                if "ok" in answer:
                    state.finish(claim, answer["ok"], wall)
                else:
                    state.fail(claim, FailureKind(answer["kind"]), answer["error"],
                               options.max_attempts, wall)
            now = time.monotonic()
            if in_flight and now - last_beat > options.heartbeat_s:
                state.heartbeat([claim for claim, _ in in_flight.values()])
                last_beat = now
            if options.task_timeout:
                for future, (claim, started) in list(in_flight.items()):
                    if now - started > options.task_timeout:
                        ray.cancel(future, force=True)
                        del in_flight[future]
                        state.fail(claim, FailureKind.TIMEOUT,
                                   f"ran {now - started:.0f} s, over --task-timeout "
                                   f"{options.task_timeout:g} s; Ray task cancelled",
                                   options.max_attempts, now - started)
            if now - last_reclaim > RECLAIM_EVERY_S:
                state.reclaim(options.max_attempts, options.stale_after)
                last_reclaim = now
            counts = tick()
            if not in_flight and counts.pending == 0 and counts.running == 0:
                return
    finally:
        for future, (claim, _) in in_flight.items():  # Ctrl-C: give them back
            with contextlib.suppress(Exception):
                ray.cancel(future, force=True)
            state.release(claim)
        with contextlib.suppress(Exception):
            ray.shutdown()

