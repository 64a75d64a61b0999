"""Shared memory in a real two-node swarm (SN, run-sl, sidecars, mTLS): the merged
weights are bit-identical whichever way each node's hand-off goes, and a sidecar whose
region its SL node cannot see falls back to the socket, saying so at both ends."""

from __future__ import annotations

import json
import os

SYNTHETIC = "benchmarks/synthetic_sidecar.py"


def _regions() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("swarm-region-")}


def _swarm(sites, start_sn, start_sl, tmp_path, run: str, extra_env: list[dict]):
    sn = start_sn(sites[0])
    nodes = []
    for index, site in enumerate(sites[:2]):
        env = {"NODE_INDEX": str(index), "MIN_PEERS": "2", "ROUNDS": "3", "SHAPE": "300001",
               "MODEL_DIR": str(tmp_path / f"{run}-{index}"), **extra_env[index]}
        nodes.append(start_sl(site, sn, SYNTHETIC, env, name=f"{run}-sl-{index}")[0])
    for proc in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    finals = [json.loads((tmp_path / f"{run}-{i}" / "final.json").read_text()) for i in (0, 1)]
    paths = [{json.loads(line)["handoff"]["path"] for line in
              (tmp_path / f"{run}-{i}" / "handoff.jsonl").read_text().splitlines()}
             for i in (0, 1)]
    return nodes, finals, paths


def test_region_and_socket_nodes_merge_the_same_bits_as_todays_socket_path(
        sites, start_sn, start_sl, tmp_path):
    before = _regions()
    elsewhere = tmp_path / "sidecar-shm"  # the sidecar's /dev/shm is not the node's
    elsewhere.mkdir()
    nodes, finals, paths = _swarm(sites, start_sn, start_sl, tmp_path, "mixed",
                                  [{}, {"SWARM_SHM_DIR": str(elsewhere)}])
    assert paths == [{"region"}, {"socket"}]
    region_node, fallback_node = nodes
    assert "Weights go to the SL node through shared memory" in region_node.output
    assert "the sidecar's weights come through shared memory" in region_node.output
    # The fallback is automatic and logged by both ends, with the reason.
    assert "shared memory with the sidecar is not possible" in fallback_node.output
    assert "does not exist here" in fallback_node.output
    assert "The SL node cannot map this program's shared memory" in fallback_node.output
    assert finals[0]["weights_sha256"] == finals[1]["weights_sha256"]
    assert finals[0]["rounds"] == finals[1]["rounds"] == 4  # BEGIN and 3 syncs
    # No region name outlives the Hello that set it up.
    assert _regions() <= before and not os.listdir(elsewhere)

    _, socket_finals, socket_paths = _swarm(sites, start_sn, start_sl, tmp_path, "socket",
                                            [{"SWARM_SHM": "off"}, {"SWARM_SHM": "off"}])
    assert socket_paths == [{"socket"}, {"socket"}]
    assert socket_finals[0]["weights_sha256"] == finals[0]["weights_sha256"]
    assert socket_finals[1]["weights_sha256"] == finals[0]["weights_sha256"]
