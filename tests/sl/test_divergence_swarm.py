"""Never silently different weights, end to end (real SN, SL nodes and sidecars over
mTLS): one node, started with run-sl's hidden --experiment-faults equivocate_merged,
sends one peer a different (self-consistent) merged range every round, so that peer
computes another digest than everyone else. Whichever nodes disagree with the digest
the ledger agreed record the divergence and load the agreed model from a peer; every
node ends with the same weights."""

from __future__ import annotations

import json

import pytest

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes

SIDECAR = "tests/sl/digits_numpy_sidecar.py"


@pytest.mark.slow
def test_a_node_made_to_diverge_records_it_heals_and_all_end_identical(sites, start_sn,
                                                                       start_sl, tmp_path):
    sn = start_sn(sites[0])
    nodes = []
    for index, site in enumerate(sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "3",
               "MIN_PEERS": "3", "SYNC_FREQUENCY": "4",
               # 6 blocks of 64 KiB: every node owns a merged range to lie about
               "PAD_FLOATS": str(6 * 16384),
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        extra = ["--peer-timeout", "2"]
        if index == 2:
            extra += ["--experiment-faults", "equivocate_merged"]
        nodes.append(start_sl(site, sn, SIDECAR, env, *extra))
    for proc, _ in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    assert "EXPERIMENT: this node misbehaves on purpose" in nodes[2][0].output
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(3)]
    assert len({r["weights_sha256"] for r in results}) == 1, results

    records = [read_outcomes(data_dir / OUTCOMES_FILE) for _, data_dir in nodes]
    merged = [{r["round"]: r for r in rs if r["status"] == "merged"} for rs in records]
    diverged = [r for rs in merged for r in rs.values() if r["diverged"]]
    assert diverged, "the fault made no node diverge"
    for record in diverged:
        # Recorded with the ledger's digest, and healed in the same round.
        assert record["agreed"] is False and record["agreed_digest"]
        assert record["agreed_digest"] != record["merged_digest"]
        assert record["healed_from"], record
    for rounds in merged:
        for r in rounds.values():
            assert r["diverged"] == (r["agreed"] is False), r
    # In every round all three merged, the nodes that disagreed with the ledger are
    # exactly those whose digest differs from the agreed one.
    common = set(merged[0]) & set(merged[1]) & set(merged[2])
    assert len(common) >= 3
    for round_number in common:
        agreed = {m[round_number]["agreed_digest"] or m[round_number]["merged_digest"]
                  for m in merged}
        assert len(agreed) == 1, (round_number, [m[round_number] for m in merged])
        digests = [m[round_number]["merged_digest"] for m in merged]
        assert len(set(digests)) == 2, digests  # the victim's differs every round
    heals = sorted(r["heal_s"] for r in diverged)
    print(f"{len(diverged)} divergences healed; heal time median {heals[len(heals) // 2]:.3f} s, "
          f"max {heals[-1]:.3f} s")


@pytest.mark.slow
def test_a_made_up_commit_leaves_the_honest_nodes_identical_and_recorded(sites, start_sn,
                                                                         start_sl, tmp_path):
    """gamma commits a made-up digest every round: when it commits first, nobody holds the
    ledger's model, and the others record the divergence and keep their common model."""
    sn = start_sn(sites[0])
    nodes = []
    for index, site in enumerate(sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "3", "MAX_EPOCHS": "3",
               "MIN_PEERS": "3", "SYNC_FREQUENCY": "4",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        extra = ["--peer-timeout", "2"]
        if index == 2:
            extra += ["--experiment-faults", "false_commit"]
        nodes.append(start_sl(site, sn, SIDECAR, env, *extra))
    for proc, _ in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(3)]
    assert len({r["weights_sha256"] for r in results}) == 1, results

    merged = [{r["round"]: r for r in read_outcomes(data_dir / OUTCOMES_FILE)
               if r["status"] == "merged"} for _, data_dir in nodes]
    common = set(merged[0]) & set(merged[1]) & set(merged[2])
    assert len(common) >= 3
    made_up = 0
    for round_number in common:
        records = [m[round_number] for m in merged]
        assert len({r["merged_digest"] for r in records}) == 1, records  # nobody lied here
        honest = records[:2]
        if honest[0]["diverged"]:  # the ledger holds gamma's made-up digest
            made_up += 1
            for r in honest:
                assert r["diverged"] and r["healed_from"] == "", r
                assert r["agreed_digest"] != r["merged_digest"]
        else:  # an honest node was first: gamma is the one off the ledger, and heals
            assert not honest[1]["diverged"], honest
            assert records[2]["diverged"] and records[2]["healed_from"], records[2]
    print(f"{made_up} of {len(common)} rounds: the ledger held the made-up digest")
