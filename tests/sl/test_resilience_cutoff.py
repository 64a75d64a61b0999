"""A node cut off long enough to be marked inactive rejoins and ends identical."""

from __future__ import annotations

import json
import signal
import time

import pytest

from swarm.network.sn_client import SNClient

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def eventually(check, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout_s} s: {what}"
        time.sleep(0.2)


def test_a_node_frozen_past_its_liveness_timeout_rejoins_the_rounds(sites, start_sn, start_sl,
                                                                   tmp_path):
    alpha, beta, gamma = sites
    sn = start_sn(alpha, None, "--liveness-timeout", "3", "--round-grace", "1")
    nodes = []
    for index, site in enumerate(sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "30",
               "MIN_PEERS": "2", "SYNC_FREQUENCY": "4",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, sn, SIDECAR, env, "--peer-timeout", "2")[0])
    victim = nodes[2]
    victim.wait_for("round 2 merged", timeout_s=180)
    admin = SNClient(sn.target, alpha.material("swci"))

    def status_of(node_id: str) -> str:
        return {m.node_id: m.status for m in admin.list_peers(role="sl")}[node_id]

    def participants(round_number: int) -> set[str]:
        return {p.node_id for p in admin.wait_round(round_number, 0.1).participants}

    victim.proc.send_signal(signal.SIGSTOP)  # cut off: no heartbeats, no answers to peers
    try:
        eventually(lambda: status_of("gamma/sl-3") == "inactive", 30, "marked inactive")
        frozen_at = admin.status().last_sealed_round
        # The others go on merging without it.
        eventually(lambda: admin.status().latest_merged_round >= frozen_at + 3, 120,
                   "rounds without the frozen node")
        time.sleep(5)
    finally:
        victim.proc.send_signal(signal.SIGCONT)
    resumed_at = admin.status().last_sealed_round
    eventually(lambda: status_of("gamma/sl-3") == "active", 30, "active again")
    # It takes part in rounds again (while its peers still train).
    eventually(lambda: any("gamma/sl-3" in participants(r) for r in range(
        resumed_at + 1, admin.status().last_sealed_round + 1)), 120, "a round with it again")
    admin.close()
    for proc in nodes:
        assert proc.wait_exit(400) == 0, proc.output[-4000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(3)]
    assert len({r["weights_sha256"] for r in results}) == 1, results
