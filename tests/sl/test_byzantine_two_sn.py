"""A Byzantine participant in a swarm of four SL nodes over two SN nodes: the receipt
bitmaps go through the ledger (one order for both SNs), so a node that vetoes every
update or tells peers different things is named alike by both SNs and left out, and the
three honest nodes keep merging and end with identical weights."""

from __future__ import annotations

import json
import re
import statistics

import pytest

from swarm.cli.ledger import main as ledger_main
from swarm.ledger.audit import build_report, open_data_dir
from swarm_testing import free_port, make_sites, run_sl_argv

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
SIDECAR = "tests/sl/digits_numpy_sidecar.py"
MERGED = re.compile(r"INFO swarm\.sl: round (\d+) merged")
VERDICT = re.compile(r"WARNING swarm\.sn\.receipts: (round \d+ .*left out of the next seals: "
                     r"#\d+)")


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory):
    return make_sites(tmp_path_factory.mktemp("four2sn"),
                      [("alpha", 1), ("beta", 2), ("gamma", 3), ("delta", 4)])


@pytest.mark.parametrize("fault", ["veto_all", "equivocate_votes"])
def test_honest_nodes_on_two_sns_finish_identical_despite_a_byzantine_fourth(
        four_sites, processes, start_sn, tmp_path, fault):
    extra = ("--round-grace", "1", "--liveness-timeout", "60")
    sentinel = start_sn(four_sites[0], None, *extra)
    joiner = start_sn(four_sites[1], sentinel, *extra)
    nodes = []
    for index, site in enumerate(four_sites):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "4", "MAX_EPOCHS": "6",
               "MIN_PEERS": "3", "SYNC_FREQUENCY": "2",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        sn = sentinel if index % 2 == 0 else joiner   # the Byzantine #3 is on the joiner
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
    # Both SNs judged the same frozen set: both left the same node out, in the same words.
    verdicts = [[m.group(1) for m in map(VERDICT.search, sn.proc.output.splitlines()) if m]
                for sn in (sentinel, joiner)]
    assert verdicts[0] and verdicts[0][0] == verdicts[1][0], verdicts
    rows = [json.loads(line) for line in
            (tmp_path / "sl-0" / "rounds.jsonl").read_text().splitlines()]
    merged = [r for r in rows if r["status"] == "merged"]
    print(f"{fault} over two SNs: {len(merged)}/{len(rows)} rounds merged, median control "
          f"{statistics.median(r['control_s'] for r in merged):.3f} s, exchange (with the "
          f"receipts) {statistics.median(r['exchange_s'] for r in merged):.3f} s")
    for proc in honest:
        assert "deciding by vote" not in proc.output  # the receipts, not the vote
        assert len(MERGED.findall(proc.output)) >= 3, proc.output[-3000:]
    # A participant voting against everything breaks no ledger rule. The joiner keeps no
    # chain of its own (it uses the sentinel's), so: the sentinel's data directory read
    # offline, and the live ledger read through the sentinel with the joiner's certificate.
    with open_data_dir(sentinel.data_dir) as history:
        report = build_report(history)
    assert report.findings == [], [f.line() for f in report.findings]
    frozen = [b for r in report.rounds for b in r.receipts if b["frozen_count"] is not None]
    assert frozen, [r.receipts for r in report.rounds]
    assert ledger_main(["verify", "--data-dir", str(sentinel.data_dir)]) == 0
    assert ledger_main(["verify", "--sn", sentinel.target, "--sn-p2p-port", str(sentinel.p2p_port),
                        *four_sites[1].tls_args("sn")]) == 0
