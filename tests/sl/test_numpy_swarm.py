"""A two-node NumPy softmax swarm: real SN, SL nodes and sidecars, over mTLS."""

from __future__ import annotations

import json
import subprocess
import sys

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes
from swarm.network.sn_client import SNClient
from swarm_testing import REPO

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def local_accuracy(node: int, nodes: int, tmp_path) -> float:
    out = tmp_path / f"local-{node}"
    subprocess.run([sys.executable, SIDECAR, "--local"], cwd=REPO, check=True, timeout=120,
                   env={"NODE_INDEX": str(node), "NUM_NODES": str(nodes), "MAX_EPOCHS": "5",
                        "MODEL_DIR": str(out), "PATH": "/usr/bin:/bin"}, capture_output=True)
    return json.loads((out / "result.json").read_text())["accuracy"]


def test_two_numpy_nodes_end_bit_identical_and_beat_local_training(sites, start_sn, start_sl,
                                                                  tmp_path):
    alpha, beta, _ = sites
    sn = start_sn(alpha)
    nodes = []
    for index, site in enumerate((alpha, beta)):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "5",
               "MIN_PEERS": "2", "MODEL_DIR": str(tmp_path / f"model-{index}"),
               "VALIDATE": "1"}
        # beta's program runs under the sidecar launcher, as in the sidecar image
        ml_cmd = SIDECAR if index == 0 else f"-m ml_sidecar {SIDECAR}"
        nodes.append(start_sl(site, sn, ml_cmd, env))
    for proc, _ in nodes:
        assert proc.wait_exit(300) == 0, proc.output
    assert f"ml_sidecar: running {SIDECAR}" in nodes[1][0].output
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text()) for i in (0, 1)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert results[0]["rounds"] >= 5
    for proc, data_dir in nodes:
        assert "All peers and Swarm training rounds finished. Final Swarm model was loaded." \
            in proc.output
        merged = [r for r in read_outcomes(data_dir / OUTCOMES_FILE) if r["status"] == "merged"]
        # The start adopts one node's model: the other sends nothing in that round.
        assert merged[0]["start"] and len(merged[0]["contributors"]) == 1, merged[0]
        assert len(merged) >= 5 and all(r["bytes_sent"] > 0 for r in merged[1:]), merged
        assert len({r["merged_digest"] for r in merged}) == len(merged)
        # Each merged model's validation metrics ride on the node's next outcome.
        measured = [r for r in merged if r["metrics_round"]]
        assert len(measured) >= len(merged) - 1, merged
        for r in measured:
            assert r["metrics_round"] < r["round"] and set(r["metrics"]) == {"val_loss", "accuracy"}
    # ... and reach the SN's read model, on the reports of the round they measure.
    with SNClient(sn.target, alpha.material("swci"), retry_s=10) as admin:
        view = admin.view()
    curve = {r.round: [o.metrics["accuracy"] for o in r.reports if o.metrics]
             for r in view.rounds}
    curve = {k: v for k, v in curve.items() if v}
    assert len(curve) >= 3 and all(len(v) == 2 for v in list(curve.values())[:-1]), view.rounds
    first, last = min(curve), max(curve)
    assert max(curve[last]) > min(curve[first]), curve  # the merged model learns
    for index in (0, 1):
        saved = list((tmp_path / f"model-{index}" / "saved_models").iterdir())
        assert saved, "the final model is saved under MODEL_DIR/saved_models"
    swarm_accuracy = results[0]["accuracy"]
    local = [local_accuracy(i, 2, tmp_path) for i in (0, 1)]
    assert swarm_accuracy > max(local) + 0.2, (swarm_accuracy, local)
