"""The sentinel SIGKILLed mid-training and restarted on its data dir: training resumes."""

from __future__ import annotations

import json
import signal
import time

import pytest

from swarm.network.sn_client import SNClient

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
SIDECAR = "tests/sl/digits_numpy_sidecar.py"
FINAL_LINE = "All peers and Swarm training rounds finished. Final Swarm model was loaded."


def test_sl_nodes_ride_out_a_sentinel_restart_and_end_identical(sites, start_sn, start_sl,
                                                                 tmp_path):
    alpha, beta, _ = sites
    sn = start_sn(alpha, None, "--round-grace", "1")
    nodes = []
    for index, site in enumerate((alpha, beta)):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "8",
               "MIN_PEERS": "2", "SYNC_FREQUENCY": "2",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, sn, SIDECAR, env, "--peer-timeout", "3")[0])
    nodes[0].wait_for("round 3 merged", timeout_s=180)
    with SNClient(sn.target, alpha.material("swci"), retry_s=0) as admin:
        before = admin.status()
    sn.proc.kill(signal.SIGKILL)
    time.sleep(5)
    restarted = start_sn(alpha, None, "--round-grace", "1", data_dir=sn.data_dir,
                         api_port=sn.api_port, p2p_port=sn.p2p_port)

    # The restarted SN rebuilt its round book and session from the ledger.
    with SNClient(restarted.target, alpha.material("swci"), retry_s=0) as admin:
        after = admin.status()
    assert after.last_sealed_round >= before.last_sealed_round
    assert after.latest_merged_round >= before.latest_merged_round > 0
    assert (after.min_peers, after.config_json) == (before.min_peers, before.config_json)

    for proc in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-4000:]
        assert FINAL_LINE in proc.output
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in (0, 1)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"], results
    # Training went on after the restart: rounds were sealed and merged by the new SN.
    with SNClient(restarted.target, alpha.material("swci"), retry_s=0) as admin:
        final = admin.status()
    assert final.latest_merged_round > after.last_sealed_round, (final, after)
    assert restarted.proc.proc.poll() is None
