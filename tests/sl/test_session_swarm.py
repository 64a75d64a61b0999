"""One session from the ledger: a sidecar asking for another merge method is refused with
one line naming both, and every node merges with the recorded method."""

from __future__ import annotations

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


def test_a_sidecar_asking_for_another_merge_method_is_refused(sites, start_sn, start_sl,
                                                              tmp_path):
    alpha, beta, gamma = sites
    sn = start_sn(alpha)

    def env(index: int, method: str) -> dict:
        return {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "2",
                "MIN_PEERS": "2", "MERGE_METHOD": method}

    first, first_dir = start_sl(alpha, sn, SIDECAR, env(0, "coordmedian"))
    first.wait_for("sidecar (numpy) connected")
    other, _ = start_sl(beta, sn, SIDECAR, env(1, "mean"))
    assert other.wait_exit(120) != 0
    assert ("asks for mergeMethod='mean' but the swarm's session (recorded on the ledger) "
            "uses mergeMethod='coordmedian': refused") in other.output
    second, second_dir = start_sl(gamma, sn, SIDECAR, env(1, "coordmedian"))
    for proc in (first, second):
        assert proc.wait_exit(180) == 0, proc.output[-3000:]
    for data_dir in (first_dir, second_dir):
        merged = [r for r in read_outcomes(data_dir / OUTCOMES_FILE) if r["status"] == "merged"]
        assert merged and {r["merge_method"] for r in merged} == {"coordmedian"}
