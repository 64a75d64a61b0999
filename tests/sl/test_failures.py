"""A node killed with SIGKILL mid-training; the others finish; a late joiner catches up."""

from __future__ import annotations

import json
import signal
import time

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def merged_rounds(data_dir) -> list[dict]:
    return [r for r in read_outcomes(data_dir / OUTCOMES_FILE) if r["status"] == "merged"]


def wait_merged(data_dir, round_number: int, proc, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(r["round"] >= round_number for r in merged_rounds(data_dir)):
        assert proc.proc.poll() is None, proc.output[-3000:]
        assert time.monotonic() < deadline, f"no round {round_number} merged in {timeout_s} s"
        time.sleep(0.2)


def test_survivors_finish_without_a_killed_node_and_a_late_joiner_catches_up(
        sites, start_sn, start_sl, tmp_path):
    alpha, beta, gamma = sites
    sn = start_sn(alpha, None, "--liveness-timeout", "3", "--round-grace", "1")

    def env(index: int, model: str) -> dict:
        return {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "12",
                "MIN_PEERS": "2", "SYNC_FREQUENCY": "2", "MODEL_DIR": str(tmp_path / model)}

    survivors = [start_sl(site, sn, SIDECAR, env(i, f"model-{i}"), "--peer-timeout", "2")
                 for i, site in enumerate((alpha, beta))]
    victim, victim_dir = start_sl(gamma, sn, SIDECAR, env(2, "model-2"), "--peer-timeout", "2",
                                  name="victim")
    wait_merged(victim_dir, 5, victim, timeout_s=120)
    victim.kill(signal.SIGKILL)
    killed_at = time.time()

    # A node started late (the same site again, fresh state) loads the latest merged model.
    joiner, joiner_dir = start_sl(gamma, sn, SIDECAR, env(2, "model-late"), "--peer-timeout",
                                  "2", name="late")

    for proc in (*(p for p, _ in survivors), joiner):
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    results = [json.loads((tmp_path / m / "result.json").read_text())
               for m in ("model-0", "model-1", "model-late")]
    assert len({r["weights_sha256"] for r in results}) == 1, results
    loaded = [r for r in read_outcomes(joiner_dir / OUTCOMES_FILE) if r["status"] == "loaded"]
    assert loaded and loaded[0]["round"] >= 5, loaded
    # The survivors were never stuck for long: the dead peer was dropped within seconds.
    for proc, data_dir in survivors:
        after = [r["finished_at"] for r in merged_rounds(data_dir) if r["finished_at"] > killed_at]
        assert after, proc.output[-2000:]
        gaps = [b - a for a, b in zip([killed_at, *after], after)]
        assert max(gaps) < 10.0, gaps
    assert sn.proc.proc.poll() is None  # the SN is fine
