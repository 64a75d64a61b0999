"""A lying shard owner, end to end (real SN, four SL nodes and sidecars over mTLS):
delta, started with run-sl's hidden --experiment-faults wrong_partial, pushes every
peer a scaled (finite, self-consistent) merged range of every shard it owns.
Unreplicated (shardReplicas=1) the three honest nodes all take its lie: their merged
digest differs from the one delta computed honestly. With shardReplicas=3 every shard
has three owners, the two honest ones outvote delta, and all four nodes merge the same
model every round. Read from rounds.jsonl (RoundOutcome) and result.json."""

from __future__ import annotations

import json

import pytest

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes

from swarm_testing import make_sites

pytestmark = pytest.mark.slow  # two real swarms for tens of seconds
SIDECAR = "tests/sl/digits_numpy_sidecar.py"
LIAR = 3


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("four"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])


@pytest.mark.parametrize("replicas", [1, 3])
def test_a_lying_owner_corrupts_one_owner_per_shard_and_is_outvoted_by_three(
        four_sites, start_sn, start_sl, tmp_path, replicas):
    sn = start_sn(four_sites[0], None, "--round-grace", "1")
    nodes = []
    for index, site in enumerate(four_sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "4", "MAX_EPOCHS": "3",
               "MIN_PEERS": "4", "SYNC_FREQUENCY": "4", "SHARD_REPLICAS": str(replicas),
               # 8 blocks of 64 KiB: every node owns real ranges to lie about
               "PAD_FLOATS": str(8 * 16384),
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        extra = ["--peer-timeout", "3"]
        if index == LIAR:
            extra += ["--experiment-faults", "wrong_partial"]
        nodes.append(start_sl(site, sn, SIDECAR, env, *extra))
    for proc, _ in nodes:
        assert proc.wait_exit(400) == 0, proc.output[-3000:]
    assert "EXPERIMENT: this node misbehaves on purpose" in nodes[LIAR][0].output

    records = [read_outcomes(data_dir / OUTCOMES_FILE) for _, data_dir in nodes]
    merged = [{r["round"]: r for r in rs if r["status"] == "merged"} for rs in records]
    common = set.intersection(*(set(m) for m in merged))
    assert len(common) >= 2, [sorted(m) for m in merged]
    honest = [i for i in range(4) if i != LIAR]
    for round_number in sorted(common):
        digests = [merged[i][round_number]["merged_digest"] for i in range(4)]
        assert len({digests[i] for i in honest}) == 1, (round_number, digests)
        if replicas == 1:  # every honest node took delta's lie; delta kept its own
            assert digests[LIAR] != digests[honest[0]], (round_number, digests)
        else:  # outvoted: delta's lie reached nobody, not even a divergence to heal
            assert digests[LIAR] == digests[honest[0]], (round_number, digests)
            assert not any(merged[i][round_number]["diverged"] for i in range(4))
            # Every honest node's record names the one owner the others outvoted: delta.
            named = {tuple(merged[i][round_number]["outvoted"]) for i in honest}
            assert len(named) == 1 and len(next(iter(named))) == 1, (round_number, named)
        if replicas == 1:
            assert not any(merged[i][round_number]["outvoted"] for i in range(4))
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(4)]
    assert len({results[i]["weights_sha256"] for i in honest}) == 1, results
    sent = sorted(merged[0][r]["bytes_sent"] / merged[0][r]["model_bytes"] for r in common)
    print(f"shardReplicas={replicas}: {len(common)} rounds merged by all four; alpha sent "
          f"median {sent[len(sent) // 2]:.2f} model sizes per round")
