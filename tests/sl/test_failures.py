"""A node killed with SIGKILL mid-training; the others finish; a late joiner catches up."""

from __future__ import annotations

import datetime as dt
import json
import re
import signal

SIDECAR = "tests/sl/digits_numpy_sidecar.py"
MERGED = re.compile(r"^(\S+ \S+) INFO swarm\.sl: round (\d+) merged")


def merge_times(output: str) -> list[dt.datetime]:
    times = []
    for line in output.splitlines():
        match = MERGED.match(line)
        if match:
            times.append(dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f"))
    return times


def test_survivors_finish_without_a_killed_node_and_a_late_joiner_catches_up(
        sites, start_sn, start_sl, tmp_path):
    alpha, beta, gamma = sites
    sn = start_sn(alpha, None, "--liveness-timeout", "3", "--round-grace", "1")

    def env(index: int, model: str) -> dict:
        return {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "12",
                "MIN_PEERS": "2", "SYNC_FREQUENCY": "2", "MODEL_DIR": str(tmp_path / model)}

    survivors = [start_sl(site, sn, SIDECAR, env(i, f"model-{i}"), "--peer-timeout", "2")[0]
                 for i, site in enumerate((alpha, beta))]
    victim, _ = start_sl(gamma, sn, SIDECAR, env(2, "model-2"), "--peer-timeout", "2",
                         name="victim")
    victim.wait_for("round 5 merged", timeout_s=120)
    victim.kill(signal.SIGKILL)
    killed_at = dt.datetime.now()

    # A node started late (the same site again, fresh state) loads the latest merged model.
    joiner, _ = start_sl(gamma, sn, SIDECAR, env(2, "model-late"), "--peer-timeout", "2",
                         name="late")
    line = joiner.wait_for("loaded the merged model of round", timeout_s=120)
    assert int(re.search(r"round (\d+)", line).group(1)) >= 5

    for proc in (*survivors, joiner):
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    results = [json.loads((tmp_path / m / "result.json").read_text())
               for m in ("model-0", "model-1", "model-late")]
    assert len({r["weights_sha256"] for r in results}) == 1, results
    # The survivors were never stuck for long: the dead peer was dropped within seconds.
    for proc in survivors:
        after = [t for t in merge_times(proc.output) if t > killed_at]
        assert after, proc.output[-2000:]
        gaps = [(b - a).total_seconds() for a, b in zip([killed_at, *after], after)]
        assert max(gaps) < 10.0, gaps
    assert sn.proc.proc.poll() is None  # the SN is fine
