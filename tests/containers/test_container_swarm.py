"""run-sl --ml-image: two SL nodes whose sidecars run in NumPy-image containers train the
mnist-numpy example as a swarm and end with the same model; stopping an SL node (SIGTERM
or SIGKILL) stops its container within seconds."""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest

from swarm.callback import FINAL_LOG_LINE
from swarm.data import synth

from container_testing import (assert_sleeper_started, containers_named, example_args,
                               seconds_until_gone, sleeper_args)

DIGEST = re.compile(r"Final weights SHA-256: ([0-9a-f]{64})")
# tests/examples' mnist-numpy knobs: the container run's wall time compares with that one.
KNOBS = {"TRAIN_SAMPLES": "512", "MAX_EPOCHS": "2", "BATCH_SIZE": "64", "SYNC_FREQUENCY": "2",
         "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_container_sidecars_train_as_a_swarm_and_end_with_the_same_model(
        engine, numpy_image, container_sl, tmp_path):
    data = tmp_path / "data"
    synth.write_mnist(data, train=600, test=100)
    nodes = []
    for index in range(2):
        model = tmp_path / f"model-{index}"
        model.mkdir()
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MIN_PEERS": "2",
               "DATA_DIR": "/data", "MODEL_DIR": "/model", **KNOBS}
        nodes.append(container_sl(numpy_image, engine, f"swarm-test-ml{index}",
                                  *example_args("mnist-numpy", data, model), node=index,
                                  ml_env=env))
    for node in nodes:
        assert node.proc.wait_exit(480) == 0, node.proc.output[-4000:]
    digests = set()
    for index, node in enumerate(nodes):
        assert FINAL_LOG_LINE in node.proc.output
        log = node.sidecar_log
        assert FINAL_LOG_LINE in log  # the container's output is in the sidecar log
        digests.update(DIGEST.findall(log))
        assert (tmp_path / f"model-{index}" / "metrics.json").exists()
    assert len(digests) == 1, digests
    for node in nodes:  # --rm: gone once it ended
        assert containers_named(engine, node.name) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, "SIGKILL-all"],
                         ids=["SIGTERM", "SIGKILL", "SIGKILL-all"])
@pytest.mark.parametrize("cli", ["podman", "docker"])
def test_stopping_the_sl_node_stops_its_container_within_seconds(
        cli, sig, engine, numpy_image, container_sl, tmp_path, request):
    """With podman, and with the docker CLI talking to podman's Docker API. SIGKILL-all
    also kills the engine's CLI, which would pass a signal on: only the sidecar's watchdog
    (the SL node's socket no longer answers) stops the container then."""
    env = None
    if cli == "docker":
        if not shutil.which("docker"):
            pytest.skip("no docker client")
        env = request.getfixturevalue("compose")  # DOCKER_HOST: podman's Docker API
    node = container_sl(numpy_image, cli, "swarm-test-stop", *sleeper_args(tmp_path),
                        "--ml-cmd", "sleeper.py", env=env)
    node.proc.wait_for("sleeping", 120)
    assert_sleeper_started(node.proc.output, tmp_path)
    assert containers_named(engine, node.name) == [node.name]
    started = time.monotonic()
    if sig == "SIGKILL-all":
        pid = node.proc.proc.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text()
        for child in children.split():  # the engine's CLI
            os.kill(int(child), signal.SIGKILL)
        sig = signal.SIGKILL
    node.proc.proc.send_signal(sig)
    node.proc.wait_exit(30)
    took = seconds_until_gone(engine, node.name, started)
    print(f"{cli} {request.node.callspec.id}: container gone {took:.1f} s after the signal")
    assert containers_named(engine, node.name) == [], \
        f"container {node.name} still there after {took:.0f} s"
    # Before: Python as PID 1 ignored SIGTERM and the container was killed after 15 s.
    assert took < 12, f"the container took {took:.1f} s to stop"
    if sig == signal.SIGTERM:  # the program ended through its finally block
        assert "sleeper: stopping" in node.sidecar_log


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_pytorch_image_sidecar_trains_the_cifar10_pytorch_example(
        engine, torch_image, container_sl, tmp_path):
    """The PyTorch image runs the example unchanged (ResNet-18, torchmetrics), one node."""
    data, model = tmp_path / "data", tmp_path / "model"
    synth.write_cifar10(data, train=100, test=50)
    model.mkdir()
    env = {"NODE_INDEX": "0", "NUM_NODES": "1", "MIN_PEERS": "1", "DATA_DIR": "/data",
           "MODEL_DIR": "/model", "TRAIN_SAMPLES": "64", "TEST_SAMPLES": "32", "MAX_EPOCHS": "1",
           "BATCH_SIZE": "32", "SYNC_FREQUENCY": "1", "OMP_NUM_THREADS": "1"}
    node = container_sl(torch_image, engine, "swarm-test-torch",
                        *example_args("cifar10-pytorch", data, model), ml_env=env)
    assert node.proc.wait_exit(780) == 0, node.proc.output[-4000:]
    assert FINAL_LOG_LINE in node.proc.output
    assert list((model / "saved_models").iterdir())
