"""checkinModelOnTrainEnd=snapshot: the last node to finish merges its final model into
the final swarm model (with the earlier finishers' snapshots) before the swarm ends,
instead of dropping its training since its last sync. Real SN, SL nodes and sidecars."""

from __future__ import annotations

import json

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def test_the_last_finisher_merges_its_final_model(sites, start_sn, start_sl, tmp_path):
    alpha, beta, _ = sites
    sn = start_sn(alpha)
    # alpha trains twice as long as beta: beta finishes first, alpha ends the swarm.
    nodes = [start_sl(site, sn, SIDECAR,
                      {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": epochs,
                       "MIN_PEERS": "2", "MODEL_DIR": str(tmp_path / f"model-{index}")})
             for index, (site, epochs) in enumerate(((alpha, "4"), (beta, "2")))]
    for proc, _ in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text()) for i in (0, 1)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"]
    assert results[0]["rounds"] > results[1]["rounds"], results
    last = [r for r in read_outcomes(nodes[0][1] / OUTCOMES_FILE) if r["status"] == "merged"]
    # The BEGIN round and every regular sync of alpha's sidecar, then one more: its final
    # model, merged with beta's snapshot (before the change: none, the swarm just ended).
    assert len(last) == results[0]["rounds"] + 1, (results[0], last)
    assert len(last[-1]["contributors"]) == 2, last[-1]
    first = [r for r in read_outcomes(nodes[1][1] / OUTCOMES_FILE) if r["status"] == "merged"]
    assert first[-1]["round"] == last[-1]["round"], (first[-1], last[-1])  # beta took part
