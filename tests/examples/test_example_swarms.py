"""Every example trains end to end as a real swarm: a sentinel SN, two SL nodes over
mutual TLS, each starting the example's train.py as its ML sidecar (through
`python -m ml_sidecar`), on synthetic data in the real file format, made tiny with the
examples' environment knobs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from swarm.callback import FINAL_LOG_LINE
from swarm.data import synth
from swarm_testing import REPO

DIGEST = re.compile(r"Final weights SHA-256: ([0-9a-f]{64})")
# Two nodes share two cores: one thread per framework each, not two apiece.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1",
              "TF_NUM_INTEROP_THREADS": "1"}


@dataclass(frozen=True)
class Case:
    data_format: str
    knobs: dict[str, str]
    timeout_s: float


# Each node gets a few batches and syncs every batch or two: the start round, regular
# rounds and the final round all happen.
CASES = {
    "mnist-numpy": Case("mnist", {"TRAIN_SAMPLES": "512", "MAX_EPOCHS": "2", "BATCH_SIZE": "64",
                                  "SYNC_FREQUENCY": "2"}, 120),
    "cifar10-keras": Case("cifar10", {"TRAIN_SAMPLES": "256", "TEST_SAMPLES": "64",
                                      "MAX_EPOCHS": "1", "SYNC_FREQUENCY": "2"}, 240),
    "cifar10-pytorch": Case("cifar10", {"TRAIN_SAMPLES": "128", "TEST_SAMPLES": "64",
                                        "MAX_EPOCHS": "1", "BATCH_SIZE": "32",
                                        "SYNC_FREQUENCY": "1"}, 300),
    "cifar100-convnext": Case("cifar100", {"TRAIN_SAMPLES": "64", "TEST_SAMPLES": "32",
                                           "MAX_EPOCHS": "1", "BATCH_SIZE": "16",
                                           "SYNC_FREQUENCY": "1"}, 420),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """Synthetic CIFAR-10, CIFAR-100 and MNIST files, written as the real ones are."""
    out = tmp_path_factory.mktemp("data")
    synth.write_mnist(out, train=600, test=100)
    synth.write_cifar10(out, train=300, test=100)
    synth.write_cifar100(out, train=200, test=100)
    return out


def node_env(example: str, data_dir: Path, model_dir: Path, index: int, nodes: int,
             **extra: str) -> dict[str, str]:
    return {"NODE_INDEX": str(index), "NUM_NODES": str(nodes), "MIN_PEERS": str(nodes),
            "DATA_DIR": str(data_dir), "MODEL_DIR": str(model_dir),
            **CASES[example].knobs, **ONE_THREAD, **extra}


def run_swarm(example: str, nodes: int, sites, start_sn, start_sl, data_dir: Path,
              tmp_path: Path) -> list[tuple[str, dict]]:
    """Runs the example as a swarm of `nodes`; returns each node's (output, metrics.json)."""
    sentinel = start_sn(sites[0])
    procs = []
    for index, site in enumerate(sites[:nodes]):
        env = node_env(example, data_dir, tmp_path / f"model-{index}", index, nodes)
        procs.append(start_sl(site, sentinel, f"-m ml_sidecar examples/{example}/train.py",
                              env)[0])
    results = []
    for index, proc in enumerate(procs):
        assert proc.wait_exit(CASES[example].timeout_s) == 0, proc.output[-4000:]
        metrics = json.loads((tmp_path / f"model-{index}" / "metrics.json").read_text())
        results.append((proc.output, metrics))
    return results


@pytest.mark.slow
@pytest.mark.timeout(900)  # ConvNeXt-Tiny on a loaded 2-core machine can pass the 300 s default
@pytest.mark.parametrize("example", list(CASES))
def test_example_trains_as_a_two_node_swarm_and_nodes_end_identical(
        example, sites, start_sn, start_sl, data_dir, tmp_path):
    knobs = CASES[example].knobs
    results = run_swarm(example, 2, sites, start_sn, start_sl, data_dir, tmp_path)
    digests = set()
    for index, (output, metrics) in enumerate(results):
        assert FINAL_LOG_LINE in output
        assert metrics["mode"] == "swarm" and metrics["node"] == f"node-{index}"
        assert metrics["history"]["epoch"] == list(range(1, int(knobs["MAX_EPOCHS"]) + 1))
        rounds = [entry["round"] for entry in metrics["rounds"]]
        assert len(rounds) >= 2 and rounds == sorted(rounds), metrics["rounds"]
        assert all(0.0 <= entry["val_acc"] <= 1.0 for entry in metrics["rounds"])
        assert set(metrics["per_class_accuracy"]) == set(metrics["classes"])
        assert list((tmp_path / f"model-{index}" / "saved_models").iterdir())
        digests.update(DIGEST.findall(output))
    assert len(digests) == 1, digests  # both nodes loaded the same final model
    # The nodes' shares partition the training subset, and they evaluate one model alike.
    assert sum(m["samples"]["train"] for _, m in results) == int(knobs["TRAIN_SAMPLES"])
    assert results[0][1]["val_acc"] == results[1][1]["val_acc"]
    assert results[0][1]["per_class_accuracy"] == results[1][1]["per_class_accuracy"]


# What differs between a swarm run and a local run by design, not by training.
RUN_ONLY = ("mode", "rounds", "runtime_s", "started_at", "finished_at", "config")


def test_mnist_one_node_swarm_gives_the_local_runs_metrics_bit_for_bit(
        sites, start_sn, start_sl, data_dir, tmp_path):
    """A merge of one update is the identity, so one node in a swarm trains exactly as alone."""
    (output, swarm), = run_swarm("mnist-numpy", 1, sites, start_sn, start_sl, data_dir, tmp_path)
    env = node_env("mnist-numpy", data_dir, tmp_path / "local", 0, 1)
    local_run = subprocess.run([sys.executable, "examples/mnist-numpy/train.py", "--local"],
                               cwd=REPO, env={"PATH": "/usr/bin:/bin", **env}, text=True,
                               capture_output=True, timeout=120)
    assert local_run.returncode == 0, local_run.stderr
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    assert swarm["mode"] == "swarm" and local["mode"] == "local"
    assert len(swarm["rounds"]) >= 2 and local["rounds"] == []
    assert {k: v for k, v in swarm.items() if k not in RUN_ONLY} == \
        {k: v for k, v in local.items() if k not in RUN_ONLY}
    assert DIGEST.findall(output) == DIGEST.findall(local_run.stderr)
