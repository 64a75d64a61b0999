"""One node of a lab task, as the ML sidecar of a real SL node (the process backend).

    SWARM_LAB_TASK=task.json NODE_INDEX=i MODEL_DIR=dir python -m swarm.lab.node

Runs ``swarm.lab.tasks.train_node`` for node i against its SL node ($SWARM_SL_ADDRESS),
then writes MODEL_DIR/final.npy (the final flat weights) and MODEL_DIR/lab_node.json
(``{"index", "rounds", "weights_sha256", "diverged", "error"}``). A node whose training
diverges (NaN/Inf) records it there and exits 3.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

from swarm.files import atomic_target
from swarm.lab.launch import NODE_RESULT, NODE_WEIGHTS, TASK_ENV
from swarm.lab.tasks import (one_blas_thread, diverged_error, parse_task, task_data,
                             train_node, weights_sha256)

DIVERGED_EXIT = 3


def _write(path: Path, record: dict) -> None:
    with atomic_target(path, mode=0o644) as tmp:
        Path(tmp).write_text(json.dumps(record, sort_keys=True))


def main() -> int:
    for name in (TASK_ENV, "NODE_INDEX", "MODEL_DIR"):
        if not os.environ.get(name):
            print(f"swarm.lab.node: {name} is not set (run by swarm.lab.launch)", file=sys.stderr)
            return 2
    task = parse_task(json.loads(Path(os.environ[TASK_ENV]).read_text()))
    index = int(os.environ["NODE_INDEX"])
    model_dir = Path(os.environ["MODEL_DIR"])
    model_dir.mkdir(parents=True, exist_ok=True)
    data = task_data(task)
    with one_blas_thread():
        try:
            outcome = train_node(task, data, index)
        except Exception as error:
            message = diverged_error(error)
            if message is None:
                raise
            _write(model_dir / NODE_RESULT, {"index": index, "diverged": True, "error": message,
                                             "rounds": 0, "weights_sha256": ""})
            print(f"swarm.lab.node: node {index} diverged: {message}", file=sys.stderr)
            return DIVERGED_EXIT
    with atomic_target(model_dir / NODE_WEIGHTS, mode=0o644) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, outcome.flat)
    _write(model_dir / NODE_RESULT, {"index": index, "diverged": False, "error": "",
                                     "rounds": outcome.rounds,
                                     "weights_sha256": weights_sha256(outcome.flat)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
