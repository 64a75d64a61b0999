"""The two backends run one code path for the learning: the same task and seed give
bit-identical final weights in-process and as a real swarm (SN, SL nodes over mTLS,
sidecars as processes)."""

from __future__ import annotations

import sys

from swarm.lab.launch import LocalSwarm
from swarm.lab.tasks import run_task


def test_inproc_and_a_real_swarm_end_with_bit_identical_weights(tmp_path):
    # Three nodes of unequal size (Dirichlet): rounds where a finished node contributes
    # its snapshot, and a merge order that is the ledger's, not the nodes'; one node
    # flips and scales its updates (the callback's update transform) against a median.
    params = {"nodes": 3, "partition": "dirichlet", "alpha": 0.5, "epochs": 1,
              "sync_every": 8, "seed": 3, "attack": "signflip", "poison_ratio": 0.34,
              "merge": "coordmedian"}
    inproc = run_task(params, backend="inproc", workdir=tmp_path / "inproc")
    real = run_task(params, backend="process", workdir=tmp_path / "process")
    assert real["nodes_agree"] and inproc["nodes_agree"]
    assert len(set(real["node_samples"])) == 3  # unequal shards, as intended
    assert len(real["malicious"]) == 1
    assert real["rounds"] == inproc["rounds"] > 2
    assert real["weights_sha256"] == inproc["weights_sha256"]
    assert (real["accuracy"], real["loss"]) == (inproc["accuracy"], inproc["loss"])
    # The real swarm's records: every round merged by every node, agreeing with the ledger.
    swarm_root = tmp_path / "process" / "swarm"
    for site in (1, 2, 3):
        records = (swarm_root / f"sl-{site}" / "rounds.jsonl").read_text().splitlines()
        assert len(records) == real["rounds"]
        assert all('"agreed": true' in line and '"status": "merged"' in line for line in records)


def test_local_swarm_runs_a_sidecar_and_reports_each_nodes_outcomes(tmp_path):
    sidecar = tmp_path / "sidecar.py"
    sidecar.write_text(
        "import numpy as np\n"
        "from swarm.callback import SwarmCallback\n"
        "i = float(__import__('os').environ['NODE_INDEX'])\n"
        "w = {'x': np.full(4, i, np.float32)}\n"
        "cb = SwarmCallback(lambda: w, w.update, syncFrequency=1, minPeers=2)\n"
        "cb.on_train_begin()\n"
        "print('start', w['x'].tolist())\n"
        "w['x'] = np.full(4, i, np.float32)  # one batch of 'training'\n"
        "cb.on_batch_end(); cb.on_train_end()\n"
        "print('final', w['x'].tolist())\n")
    lines = []
    with LocalSwarm(tmp_path / "run", 2, [sys.executable, str(sidecar)],
                    on_line=lambda name, line: lines.append((name, line))) as swarm:
        assert swarm.wait(300) == [0, 0]
        outcomes = [swarm.outcomes(i) for i in range(2)]
    # BEGIN, the one regular sync, and the final models (snapshot: one more round)
    assert [[o["status"] for o in node] for node in outcomes] == [["merged"] * 3] * 2
    assert outcomes[0][-1]["merged_digest"] == outcomes[1][-1]["merged_digest"]
    # The start adopts one node's model (the lowest digest's), the same on both; the
    # regular round averages.
    starts = {line[line.index("start ["):] for _, line in lines if "start [" in line}
    assert len(starts) == 1 and starts <= {"start [0.0, 0.0, 0.0, 0.0]",
                                           "start [1.0, 1.0, 1.0, 1.0]"}, starts
    assert any(name == "sl-1" and "final [0.5, 0.5, 0.5, 0.5]" in line for name, line in lines)
    assert (tmp_path / "run" / "logs" / "sn-1.log").read_text()


def test_a_distance_based_merge_of_a_multi_block_model_matches_too(tmp_path):
    # hidden=[300]: 22,510 float32 values, two 64 KiB blocks, so two of the three
    # participants own a shard and geomedian's distances are summed across them.
    params = {"nodes": 3, "epochs": 1, "sync_every": 8, "hidden": [300],
              "merge": "geomedian", "seed": 1}
    inproc = run_task(params, backend="inproc", workdir=tmp_path / "inproc")
    real = run_task(params, backend="process", workdir=tmp_path / "process")
    assert real["weights_sha256"] == inproc["weights_sha256"]
    assert real["rounds"] == inproc["rounds"] > 1


def test_a_real_swarm_that_diverges_is_a_result(tmp_path):
    result = run_task({"nodes": 2, "epochs": 1, "lr": 1e8}, backend="process",
                      workdir=tmp_path)
    assert result["diverged"] is True
    assert result["accuracy"] != result["accuracy"]  # NaN
    assert "non-finite" in result["divergence"]


def test_local_swarm_stops_every_node_once_one_fails(tmp_path):
    sidecar = tmp_path / "sidecar.py"
    sidecar.write_text(
        "import os, sys\n"
        "import numpy as np\n"
        "from swarm.callback import SwarmCallback\n"
        "if os.environ['NODE_INDEX'] == '1':\n"
        "    sys.exit(7)  # this site's program crashes before joining\n"
        "w = {'x': np.zeros(4, np.float32)}\n"
        "cb = SwarmCallback(lambda: w, w.update, syncFrequency=1, minPeers=2)\n"
        "cb.on_train_begin()  # waits for a peer that never comes\n")
    with LocalSwarm(tmp_path / "run", 2, [sys.executable, str(sidecar)]) as swarm:
        codes = swarm.wait(300)
        assert codes[1] == 7 and codes[0] != 0  # node 1 failed; node 0 stopped, not waiting
        assert swarm.outcomes(0) == []
    assert all(sl.poll() is not None for sl in swarm.sls) and swarm.sn.poll() is not None
