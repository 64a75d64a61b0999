"""Three-node Keras and PyTorch swarms on load_digits split by label (non-IID).

Real processes: a sentinel SN and a joining SN, three SL nodes with their ML
sidecars, mutual TLS, the embedded ledger. Every node must end with bit-identical
weights, and the merged model must beat what each node learns alone.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from swarm_testing import REPO

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
SIDECARS = {"keras": "tests/sl/digits_keras_sidecar.py", "torch": "tests/sl/digits_torch_sidecar.py"}
FINAL_LINE = "All peers and Swarm training rounds finished. Final Swarm model was loaded."


def local_accuracies(sidecar: str, nodes: int, epochs: int, tmp_path) -> list[float]:
    """Each node trained alone, with the same code (the --local baseline), in parallel."""
    procs, dirs = [], []
    for node in range(nodes):
        out = tmp_path / f"local-{node}"
        dirs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, sidecar, "--local"], cwd=REPO, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "NODE_INDEX": str(node), "NUM_NODES": str(nodes),
                 "MAX_EPOCHS": str(epochs), "MODEL_DIR": str(out)}))
    for proc in procs:
        assert proc.wait(300) == 0
    return [json.loads((d / "result.json").read_text())["accuracy"] for d in dirs]


@pytest.mark.parametrize("framework", ["keras", "torch"])
def test_three_nodes_end_identical_and_beat_local_training(framework, sites, start_sn, start_sl,
                                                           tmp_path):
    sidecar, epochs = SIDECARS[framework], 4
    sentinel = start_sn(sites[0])
    joiner = start_sn(sites[1], sentinel)
    nodes = []
    for index, site in enumerate(sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": str(epochs),
               "MIN_PEERS": "3", "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, joiner if index == 1 else sentinel, sidecar, env)[0])
    for proc in nodes:
        assert proc.wait_exit(600) == 0, proc.output[-4000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text()) for i in range(3)]
    assert len({r["weights_sha256"] for r in results}) == 1, results
    for proc in nodes:
        assert FINAL_LINE in proc.output
    assert all((tmp_path / f"model-{i}" / "saved_models").iterdir() for i in range(3))
    swarm_accuracy = results[0]["accuracy"]
    local = local_accuracies(sidecar, 3, epochs, tmp_path)
    # Each node sees only 3 or 4 of the 10 classes: alone it cannot pass ~40%.
    assert swarm_accuracy > max(local) + 0.2, (swarm_accuracy, local)


def test_adaptive_sync_changes_the_interval_and_nodes_still_agree(sites, start_sn, start_sl,
                                                                 tmp_path):
    sentinel = start_sn(sites[0])
    nodes = []
    for index, site in enumerate(sites[:2]):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "4", "MIN_PEERS": "2",
               "ADAPTIVE": "1", "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, sentinel, SIDECARS["torch"], env)[0])
    for proc in nodes:
        assert proc.wait_exit(600) == 0, proc.output[-4000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text()) for i in range(2)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    intervals = set(re.findall(r"Adaptive sync: validation loss .* syncing every (\d+) batches",
                               nodes[0].output))
    assert len(intervals) >= 2, nodes[0].output[-3000:]  # it lengthened and/or shortened
