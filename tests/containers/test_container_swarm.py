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
from swarm_testing import REPO

from container_testing import SLEEPER, containers_named, run_sl_container_argv, unique

DIGEST = re.compile(r"Final weights SHA-256: ([0-9a-f]{64})")
# tests/examples' mnist-numpy knobs: the container run's wall time compares with that one.
KNOBS = {"TRAIN_SAMPLES": "512", "MAX_EPOCHS": "2", "BATCH_SIZE": "64", "SYNC_FREQUENCY": "2",
         "OMP_NUM_THREADS": "1"}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_container_sidecars_train_as_a_swarm_and_end_with_the_same_model(
        engine, numpy_image, sites, start_sn, processes, remove_containers, tmp_path):
    data = tmp_path / "data"
    synth.write_mnist(data, train=600, test=100)
    sn = start_sn(sites[0])
    nodes, names = [], []
    for index, site in enumerate(sites[:2]):
        model = tmp_path / f"model-{index}"
        model.mkdir()
        name = unique(f"swarm-test-ml{index}")
        names.append(name)
        remove_containers.append(name)
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MIN_PEERS": "2",
               "DATA_DIR": "/data", "MODEL_DIR": "/model", **KNOBS}
        # As an established product's user writes it: code and data mounted, data read-only.
        argv = run_sl_container_argv(
            site, sn, tmp_path / f"sl-{index}", numpy_image, engine, "--ml-name", name,
            "--ml-w", "/code/mnist-numpy", "--ml-cmd", "train.py",
            "--ml-v", f"{REPO / 'examples'}:/code:ro", "--ml-v", f"{data}:/data:ro",
            "--ml-v", f"{model}:/model", *[f"--ml-e={k}={v}" for k, v in env.items()])
        nodes.append(processes(argv))
    for node in nodes:
        assert node.wait_exit(480) == 0, node.output[-4000:]
    digests = set()
    for index, node in enumerate(nodes):
        assert FINAL_LOG_LINE in node.output
        log = (tmp_path / f"sl-{index}" / "ml-sidecar.log").read_text()
        assert FINAL_LOG_LINE in log  # the container's output is in the sidecar log
        digests.update(DIGEST.findall(log))
        assert (tmp_path / f"model-{index}" / "metrics.json").exists()
    assert len(digests) == 1, digests
    for name in names:  # --rm: gone once it ended
        assert containers_named(engine, name) == []




@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL, "SIGKILL-all"],
                         ids=["SIGTERM", "SIGKILL", "SIGKILL-all"])
@pytest.mark.parametrize("cli", ["podman", "docker"])
def test_stopping_the_sl_node_stops_its_container_within_seconds(
        cli, sig, engine, numpy_image, sites, start_sn, processes, remove_containers, tmp_path,
        request):
    """With podman, and with the docker CLI talking to podman's Docker API. SIGKILL-all
    also kills the engine's CLI, which would pass a signal on: only the sidecar's watchdog
    (the SL node's socket no longer answers) stops the container then."""
    env = None
    if cli == "docker":
        if not shutil.which("docker"):
            pytest.skip("no docker client")
        env = request.getfixturevalue("compose")  # DOCKER_HOST: podman's Docker API
    code, ro = tmp_path / "code", tmp_path / "ro"
    code.mkdir()
    ro.mkdir()
    (code / "sleeper.py").write_text(SLEEPER)
    name = unique("swarm-test-stop")
    remove_containers.append(name)
    sn = start_sn(sites[0])
    node = processes(run_sl_container_argv(
        sites[0], sn, tmp_path / "sl", numpy_image, cli, "--ml-name", name,
        "--ml-v", f"{code}:/job", "--ml-v", f"{ro}:/ro:ro", "--ml-w", "/job",
        "--ml-e", "GREETING=hello", "--ml-cmd", "sleeper.py"), env)
    node.wait_for("sleeping", 120)
    assert "ro-check: EROFS" in node.output  # :ro survived into the container
    assert "cwd /job GREETING hello" in node.output
    assert not (ro / "probe").exists()
    assert containers_named(engine, name) == [name]
    started = time.monotonic()
    if sig == "SIGKILL-all":
        children = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text()
        for pid in children.split():  # the engine's CLI
            os.kill(int(pid), signal.SIGKILL)
        sig = signal.SIGKILL
    node.proc.send_signal(sig)
    node.wait_exit(30)
    while containers_named(engine, name) and time.monotonic() - started < 60:
        time.sleep(0.5)
    took = time.monotonic() - started
    print(f"{cli} {request.node.callspec.id}: container gone {took:.1f} s after the signal")
    assert containers_named(engine, name) == [], f"container {name} still there after {took:.0f} s"
    # Before: Python as PID 1 ignored SIGTERM and the container was killed after 15 s.
    assert took < 12, f"the container took {took:.1f} s to stop"
    if sig == signal.SIGTERM:  # the program ended through its finally block
        assert "sleeper: stopping" in (tmp_path / "sl" / "ml-sidecar.log").read_text()


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_pytorch_image_sidecar_trains_the_cifar10_pytorch_example(
        engine, torch_image, sites, start_sn, processes, remove_containers, tmp_path):
    """The PyTorch image runs the example unchanged (ResNet-18, torchmetrics), one node."""
    data, model = tmp_path / "data", tmp_path / "model"
    synth.write_cifar10(data, train=100, test=50)
    model.mkdir()
    name = unique("swarm-test-torch")
    remove_containers.append(name)
    env = {"NODE_INDEX": "0", "NUM_NODES": "1", "MIN_PEERS": "1", "DATA_DIR": "/data",
           "MODEL_DIR": "/model", "TRAIN_SAMPLES": "64", "TEST_SAMPLES": "32", "MAX_EPOCHS": "1",
           "BATCH_SIZE": "32", "SYNC_FREQUENCY": "1", "OMP_NUM_THREADS": "1"}
    sn = start_sn(sites[0])
    node = processes(run_sl_container_argv(
        sites[0], sn, tmp_path / "sl", torch_image, engine, "--ml-name", name,
        "--ml-w", "/code/cifar10-pytorch", "--ml-cmd", "train.py",
        "--ml-v", f"{REPO / 'examples'}:/code:ro", "--ml-v", f"{data}:/data:ro",
        "--ml-v", f"{model}:/model", *[f"--ml-e={k}={v}" for k, v in env.items()]))
    assert node.wait_exit(780) == 0, node.output[-4000:]
    assert FINAL_LOG_LINE in node.output
    assert list((model / "saved_models").iterdir())
