"""run-sl --ml-engine docker-sdk: the sidecar container created through the Docker SDK
against podman's Docker API, with the CLI path's meaning (socket directory mounted, :ro
volumes, -w, -e, --ml-entrypoint, --ml-name, --ml-keep, init, output in the sidecar log,
removed at the end, stopped with its SL node)."""

from __future__ import annotations

import json
import signal
import time

import pytest

from sl_node.sidecar import SDK_ENGINE, Sidecar, SidecarSpec, prepare_container
from swarm.callback import FINAL_LOG_LINE
from swarm.data import synth
from container_testing import (assert_sleeper_started, containers_named, example_args,
                               seconds_until_gone, sleeper_args, unique)


@pytest.fixture
def sdk_env(docker_api, monkeypatch):
    """DOCKER_HOST for code run in this process (Sidecar used directly)."""
    monkeypatch.setenv("DOCKER_HOST", docker_api["DOCKER_HOST"])
    return docker_api


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_one_node_swarm_whose_sidecar_runs_through_the_sdk_trains_to_the_end(
        docker_api, numpy_image, container_sl, tmp_path):
    data, model = tmp_path / "data", tmp_path / "model"
    synth.write_mnist(data, train=300, test=60)
    model.mkdir()
    env = {"NODE_INDEX": "0", "NUM_NODES": "1", "MIN_PEERS": "1", "DATA_DIR": "/data",
           "MODEL_DIR": "/model", "TRAIN_SAMPLES": "256", "MAX_EPOCHS": "1", "BATCH_SIZE": "64",
           "SYNC_FREQUENCY": "2", "OMP_NUM_THREADS": "1"}
    node = container_sl(numpy_image, SDK_ENGINE, "swarm-test-sdk",
                        *example_args("mnist-numpy", data, model), ml_env=env, env=docker_api)
    assert node.proc.wait_exit(480) == 0, node.proc.output[-4000:]
    assert FINAL_LOG_LINE in node.sidecar_log  # the container's output streamed into it
    assert json.loads((model / "metrics.json").read_text())
    assert containers_named("podman", node.name) == []  # removed once it ended


@pytest.mark.timeout(180)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopping_the_sl_node_removes_its_sdk_container_within_seconds(
        sig, docker_api, numpy_image, container_sl, tmp_path):
    """SIGTERM: the SL node stops the container through the API (the launcher, given as
    --ml-entrypoint here, turns SIGTERM into the program's exit). SIGKILL: the image's
    launcher notices that its SL node no longer answers and ends; the engine removes it."""
    entrypoint = ["--ml-entrypoint", "python -m ml_sidecar"] if sig == signal.SIGTERM else []
    node = container_sl(numpy_image, SDK_ENGINE, "swarm-test-sdk-stop", *sleeper_args(tmp_path),
                        *entrypoint, "--ml-cmd", "sleeper.py", env=docker_api)
    node.proc.wait_for("sleeping", 120)
    assert_sleeper_started(node.proc.output, tmp_path)
    assert containers_named("podman", node.name) == [node.name]
    started = time.monotonic()
    node.proc.proc.send_signal(sig)
    node.proc.wait_exit(30)
    took = seconds_until_gone("podman", node.name, started)
    print(f"docker-sdk {sig.name}: container gone {took:.1f} s after the signal")
    assert containers_named("podman", node.name) == [], f"{node.name} still there after {took:.0f} s"
    assert took < 12, f"the container took {took:.1f} s to stop"
    if sig == signal.SIGTERM:  # the program ended through its finally block
        assert "sleeper: stopping" in node.sidecar_log


@pytest.mark.timeout(180)
@pytest.mark.parametrize("keep", [False, True], ids=["removed", "kept"])
def test_the_exit_code_and_output_come_back_and_the_container_goes_unless_kept(
        keep, sdk_env, numpy_image, remove_containers, tmp_path):
    name = unique("swarm-test-sdk-exit")
    remove_containers.append(name)
    program = "import os; print('address', os.environ['SWARM_SL_ADDRESS']); raise SystemExit(3)"
    spec = prepare_container(SidecarSpec(cmd=["-c", program], entrypoint=["python"],
                                         image=numpy_image, engine=SDK_ENGINE, name=name,
                                         keep=keep))
    sidecar = Sidecar(spec, tmp_path / "sl" / "sl.sock", tmp_path / "sl" / "ml-sidecar.log")
    assert sidecar.wait() == 3
    assert "address unix:///swarm-sl/sl.sock" in sidecar.log_path.read_text()
    deadline = time.monotonic() + 30  # the engine removes it just after the exit
    while not keep and containers_named("podman", name) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert containers_named("podman", name) == ([name] if keep else [])
