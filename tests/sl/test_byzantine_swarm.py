"""A four-node swarm (real SN, SL nodes and sidecars over mTLS) with one Byzantine
participant, switched on through SWARM_FAULTS (the outgoing hook): the three honest
nodes keep merging and end with identical weights."""

from __future__ import annotations

import datetime as dt
import json
import re

import pytest

from swarm_testing import READY, SN, free_port, make_sites, run_sl_argv, run_sn_argv

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
SIDECAR = "tests/sl/digits_numpy_sidecar.py"
MERGED = re.compile(r"^(\S+ \S+) INFO swarm\.sl: round (\d+) merged")


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("four"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])


def _merge_times(output: str) -> list[dt.datetime]:
    return [dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
            for m in map(MERGED.match, output.splitlines()) if m]


@pytest.mark.parametrize("fault", ["veto_all", "equivocate_votes", "stall_after_seal"])
def test_three_honest_nodes_finish_identical_despite_a_byzantine_fourth(
        four_sites, processes, tmp_path, fault):
    api, p2p = free_port(), free_port()
    sn_proc = processes(run_sn_argv(four_sites[0], tmp_path / "sn", api, p2p, "--sentinel",
                                    "--round-grace", "1",
                                    # not the registration race under load (another issue)
                                    "--liveness-timeout", "60"))
    sn_proc.wait_for(READY)
    sn = SN(sn_proc, api, p2p, tmp_path / "sn")
    nodes = []
    for index, site in enumerate(four_sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "4", "MAX_EPOCHS": "6",
               "MIN_PEERS": "3", "SYNC_FREQUENCY": "2",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        argv = run_sl_argv(site, sn, tmp_path / f"sl-{index}", free_port(), SIDECAR, env,
                           "--peer-timeout", "2")
        nodes.append(processes(argv, env={"SWARM_FAULTS": fault} if index == 3 else None))
    honest = nodes[:3]
    for proc in honest:
        assert proc.wait_exit(400) == 0, proc.output[-3000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(3)]
    assert len({r["weights_sha256"] for r in results}) == 1, results
    assert "EXPERIMENT: this node misbehaves on purpose" in nodes[3].output
    # The Byzantine node was named and left out; the honest ones merged after that.
    assert "delta/sl-4" in sn_proc.output and "left out of the next seals" in sn_proc.output
    times = _merge_times(honest[0].output)
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    print(f"{fault}: {len(times)} merges, round gaps max {max(gaps):.2f} s, "
          f"median {sorted(gaps)[len(gaps) // 2]:.2f} s")
    assert len(times) >= 3
