"""Task functions for the sweep tests, called as `swarm sweep` calls swarm.lab.tasks.run_task:
`function(params, *, backend, workdir) -> metrics`.

Every execution leaves a marker file in params["markers"] (named for params["key"], the
pid and a counter), so a test counts how often each task really ran, whatever the sweep's
own records say.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def _mark(params: dict) -> int:
    """Leaves this execution's marker; returns how many executions of this key came before."""
    folder = Path(params["markers"])
    folder.mkdir(parents=True, exist_ok=True)
    key = str(params["key"])
    before = len(list(folder.glob(f"{key}.*")))
    (folder / f"{key}.{os.getpid()}.{time.time_ns()}").write_text(str(params))
    return before


def _metrics(params: dict, backend: str) -> dict:
    # a made-up response surface: poisoning hurts `mean` more than robust merges
    seed = int(params.get("seed", 0))
    poison = float(params.get("poison_ratio", 0.0))
    hurt = {"mean": 0.8, "trimmedmean": 0.2}.get(params.get("merge", "mean"), 0.5)
    alpha = float(params.get("alpha", 1.0))
    accuracy = 0.95 - hurt * poison - 0.02 / alpha + 0.005 * ((seed * 7) % 3 - 1)
    local = [accuracy - 0.1 - 0.01 * i for i in range(int(params.get("nodes", 3)))]
    return {"accuracy": accuracy, "loss": 1.0 - accuracy, "local_accuracy": local,
            "rounds": 3, "backend_seen": backend}


def ok(params: dict, *, backend: str, workdir: Path) -> dict:
    """Succeeds after params.get("sleep", 0) seconds."""
    _mark(params)
    assert workdir.is_dir(), "the sweep gives every task an existing folder"
    print(f"task {params['key']} running in {workdir}")  # lands in the task's task.log
    time.sleep(float(params.get("sleep", 0)))
    (workdir / "weights.bin").write_bytes(b"w" * 8)
    return _metrics(params, backend)


def flaky(params: dict, *, backend: str, workdir: Path) -> dict:
    """Raises on its first params["fail_times"] executions, then succeeds."""
    before = _mark(params)
    if before < int(params["fail_times"]):
        raise RuntimeError(f"flaky failure {before + 1} of {params['fail_times']}")
    return _metrics(params, backend)


def broken(params: dict, *, backend: str, workdir: Path) -> dict:
    """Always raises, with a message the test looks for."""
    _mark(params)
    raise ValueError(f"broken task {params['key']}: bad parameter")


def kills_its_worker(params: dict, *, backend: str, workdir: Path) -> dict:
    """SIGKILLs the process running it on its first execution (a segfault, the OOM killer),
    then succeeds: the sweep must reclaim it from the dead worker and run it again."""
    if _mark(params) == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    return _metrics(params, backend)


def not_a_mapping(params: dict, *, backend: str, workdir: Path):
    _mark(params)
    return [1, 2, 3]
