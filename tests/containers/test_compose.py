"""An example's docker-compose.yml, brought up with docker-compose 1.29 against podman's
Docker API, trains to the end (certificates, sentinel, two SL nodes) and is torn down."""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from swarm.callback import FINAL_LOG_LINE
from swarm.data import synth
from swarm_testing import REPO

KNOBS = {"TRAIN_SAMPLES": "512", "MAX_EPOCHS": "2", "BATCH_SIZE": "64", "SYNC_FREQUENCY": "2",
         "MIN_PEERS": "2"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_mnist_numpy_compose_file_trains_to_the_end_and_comes_down(
        compose, node_image, engine, tmp_path):
    synth.write_mnist(tmp_path / "data", train=600, test=100)
    project = f"swarmtest{uuid.uuid4().hex[:6]}"
    env = {**compose, **KNOBS, "DATA_DIR": str(tmp_path / "data")}
    # The project directory is tmp_path: ./run lands there, not in the repository.
    base = ["docker-compose", "-p", project, "-f",
            str(REPO / "examples" / "mnist-numpy" / "docker-compose.yml"),
            "--project-directory", str(tmp_path)]

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return subprocess.run([*base, *args], env=env, capture_output=True, text=True,
                              timeout=timeout)

    try:
        up = run("up", "-d", "--no-build")
        assert up.returncode == 0, up.stderr
        names = {sl: f"{project}_{sl}_1" for sl in ("sl-1", "sl-2")}
        codes = {}
        deadline = time.monotonic() + 420
        while len(codes) < 2 and time.monotonic() < deadline:
            for sl, name in names.items():
                state = subprocess.run([engine, "inspect", "--format",
                                        "{{.State.Status}} {{.State.ExitCode}}", name],
                                       capture_output=True, text=True, timeout=60).stdout.split()
                if state and state[0] == "exited":
                    codes[sl] = int(state[1])
            time.sleep(2)
        logs = run("logs", "--no-color").stdout
        assert codes == {"sl-1": 0, "sl-2": 0}, logs[-4000:]
        assert logs.count(FINAL_LOG_LINE) >= 2, logs[-4000:]
        finals = [json.loads((tmp_path / "run" / f"model-{i}" / "metrics.json").read_text())
                  for i in (1, 2)]
        assert finals[0]["val_acc"] == finals[1]["val_acc"]
    finally:
        down = run("down", timeout=180)
    assert down.returncode == 0, down.stderr
    left = subprocess.run([engine, "ps", "-a", "--filter", f"name={project}", "--format",
                           "{{.Names}}"], capture_output=True, text=True, timeout=60)
    assert left.stdout.split() == []
