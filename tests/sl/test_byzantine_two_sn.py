"""A Byzantine participant in a swarm of four SL nodes over two SN nodes: the receipt
bitmaps go through the ledger (one order for both SNs), so a node that vetoes every
update or tells peers different things is named alike by both SNs and left out, and the
three honest nodes keep merging and end with identical weights."""

from __future__ import annotations

import json
import re
import statistics
import time

import pytest

from swarm.cli.ledger import main as ledger_main
from swarm.ledger.audit import build_report, open_data_dir

pytestmark = pytest.mark.slow  # real swarms for tens of seconds: -m "not slow" skips them
MERGED = re.compile(r"INFO swarm\.sl: round (\d+) merged")
VERDICT = re.compile(r"WARNING swarm\.sn\.receipts: (round \d+ .*left out of the next seals: "
                     r"#\d+)")


@pytest.mark.parametrize("fault", ["veto_all", "equivocate_votes"])
def test_honest_nodes_on_two_sns_finish_identical_despite_a_byzantine_fourth(
        four_sites, byzantine_swarm, start_sn, tmp_path, fault):
    extra = ("--round-grace", "1", "--liveness-timeout", "60")
    sentinel = start_sn(four_sites[0], None, *extra)
    joiner = start_sn(four_sites[1], sentinel, *extra)
    # The Byzantine #3 is on the joiner (node i on [sentinel, joiner][i % 2]); checks the
    # honest three end identical and the fourth misbehaved (tests/conftest.py).
    honest, _ = byzantine_swarm([sentinel, joiner], fault)
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
    started = time.perf_counter()
    assert ledger_main(["verify", "--sn", sentinel.target, "--sn-p2p-port", str(sentinel.p2p_port),
                        *four_sites[1].tls_args("sn")]) == 0
    print(f"verify --sn: {time.perf_counter() - started:.1f} s")
