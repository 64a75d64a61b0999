"""`swarm ledger show|verify|export` on a real embedded chain read offline from an SN data
directory: a clean history verifies; each tampered case is named by its finding code."""
from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from swarm.cli.ledger import main as ledger_main
from swarm.ledger import EmbeddedChain, LedgerEvent, node_key
from swarm.ledger.audit import FindingCode, build_report, model_digest, open_data_dir, read_history
from swarm.tensors import Layout, weights_digest

from .conftest import SENTINEL, SLS1, SLS2, build_swarm, digest, fp

WEIGHTS = [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(5, dtype=np.float32)]


def merged_digest_of(weights) -> bytes:
    layout = Layout.from_weights(weights)
    return weights_digest(layout, layout.flatten(weights))[0]


def sentinel_dir(tmp_path: Path, *, mismatch: bool = False, revoke: bool = False) -> Path:
    """An SN data directory (ledger.json + chain/) holding three sealed, merged rounds."""
    data_dir = tmp_path / "sn"
    chain = EmbeddedChain(data_dir / "chain")
    try:
        sn1, sn2, _ = build_swarm(chain.w3, data_dir, chain.dev_accounts[0])
        sn1.configure(2, {"syncInterval": 4})
        final = merged_digest_of(WEIGHTS)
        for r in (1, 2, 3):
            ids = SLS1[:2]
            sn1.check_in(r, ids, [50, 50], [digest(f"{r}-{n}") for n in ids])
            sn2.check_in(r, SLS2, [30], [digest(f"{r}-x")])
            sn1.seal(r, ids + SLS2)
            merged = final if r == 3 else digest(f"merged-{r}")
            for n in ids:
                sn1.commit_merged(r, n, merged)
            sn2.commit_merged(r, SLS2[0], digest("evil") if mismatch and r == 2 else merged)
        if revoke:
            sn1.revoke(fp(SLS1[2]), "key leaked")
        for n in ids:
            sn1.mark_finished(n)
    finally:
        chain.close()
    return data_dir


@pytest.fixture(scope="module")
def clean_dir(tmp_path_factory) -> Path:
    return sentinel_dir(tmp_path_factory.mktemp("clean"))


def codes(report) -> list[FindingCode]:
    return [f.code for f in report.findings]


def test_clean_history_verifies_and_shows_every_round(clean_dir, capsys):
    with open_data_dir(clean_dir) as history:
        report = build_report(history)
    assert report.findings == []
    assert [r.round for r in report.rounds] == [1, 2, 3]
    assert report.rounds[0].participants == [*SLS1[:2], *SLS2]
    assert report.rounds[0].weights == [50, 50, 30]
    assert report.rounds[2].merged_digest == "0x" + merged_digest_of(WEIGHTS).hex()
    assert {m["node_id"] for m in report.members} >= set(SLS1 + SLS2)
    assert [f["node"] for f in report.finished] == SLS1[:2]

    assert ledger_main(["verify", "--data-dir", str(clean_dir)]) == 0
    assert "no findings" in capsys.readouterr().out
    assert ledger_main(["show", "--data-dir", str(clean_dir)]) == 0
    shown = capsys.readouterr().out
    assert "round 3: sealed in block" in shown and SLS2[0] in shown


def test_reading_offline_leaves_the_data_dir_untouched(clean_dir):
    journal = clean_dir / "chain" / "chain.journal"
    before = journal.read_bytes()
    with open_data_dir(clean_dir):
        # The copy is what is opened: the original is not even locked.
        EmbeddedChain(clean_dir / "chain").close()
    assert journal.read_bytes() == before


def test_reading_blocks_directly_gives_the_events_eth_getlogs_gives(clean_dir, tmp_path):
    # eth-tester's eth_getLogs scans back from the head for every receipt (minutes for a
    # demo's 181 rounds): the audit reads each block once; the events must be the same.
    shutil.copytree(clean_dir / "chain", tmp_path / "chain")
    meta = json.loads((clean_dir / "ledger.json").read_text())
    chain = EmbeddedChain(tmp_path / "chain")
    try:
        read = [read_history(chain.w3, meta["contract_address"], first_block=int(meta.get("deploy_block", 0)),
                             block_records=records)
                for records in (None, chain.block_records)]
    finally:
        chain.close()
    via_logs, direct = ([(e.name, e.args, e.block_number, e.tx_hash) for e in h.events] for h in read)
    assert len(via_logs) > 20 and direct == via_logs


def test_saved_final_model_must_be_the_last_merged_round(clean_dir, tmp_path, capsys):
    good, bad = tmp_path / "good.npz", tmp_path / "bad.npz"
    np.savez(good, *WEIGHTS)
    np.savez(bad, *[w + 1 for w in WEIGHTS])
    assert model_digest(good) == merged_digest_of(WEIGHTS)
    assert ledger_main(["verify", "--data-dir", str(clean_dir), "--model", str(good)]) == 0
    capsys.readouterr()
    assert ledger_main(["verify", "--data-dir", str(clean_dir), "--model", str(good), str(bad)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("MODEL_MISMATCH") and "bad.npz" in out and "good.npz" not in out


def test_a_node_that_committed_another_merged_digest_is_named(tmp_path, capsys):
    data_dir = sentinel_dir(tmp_path, mismatch=True)
    assert ledger_main(["verify", "--data-dir", str(data_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("MERGE_MISMATCH")
    assert "round 2" in lines[0] and SLS2[0] in lines[0]
    with open_data_dir(data_dir) as history:
        report = build_report(history)
    assert report.rounds[1].disagreements[0]["node"] == SLS2[0]


def test_a_revoked_member_is_named(tmp_path, capsys):
    data_dir = sentinel_dir(tmp_path, revoke=True)
    assert ledger_main(["verify", "--data-dir", str(data_dir)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith("REVOKED_MEMBER")
    assert SLS1[2] in lines[0] and "key leaked" in lines[0]


def _events(history, name):
    return [i for i, e in enumerate(history.events) if e.name == name]


def test_history_that_breaks_the_contract_rules_is_named(clean_dir):
    with open_data_dir(clean_dir) as history:
        # A round whose RoundSealed lists differ from the hash the contract keeps.
        i = _events(history, "RoundSealed")[1]
        ev = history.events[i]
        forged = dict(ev.args, weights=(100, 50, 30))
        history.events[i] = dataclasses.replace(ev, args=forged)
        report = build_report(history)
        assert FindingCode.RECORD_MISMATCH in codes(report)
        assert FindingCode.RULE_VIOLATION in codes(report)  # the weight differs from the check-in
        history.events[i] = ev

        # A participant sealed without a check-in.
        first = _events(history, "CheckedIn")[0]
        dropped = history.events.pop(first)
        report = build_report(history)
        assert any(f.code == FindingCode.RULE_VIOLATION and "without checking in" in f.message
                   and f.round == 1 and f.node == SLS1[0] for f in report.findings)
        history.events.insert(first, dropped)

        # A member revoked before a round it was then sealed into.
        seal2 = _events(history, "RoundSealed")[1]
        revoked = LedgerEvent("Revoked", {"fingerprint": fp(SLS2[0]), "id": node_key(SLS2[0]), "reason": "forged",
                                          "by": node_key(SENTINEL)},
                              history.events[seal2].block_number, b"\x00" * 32, 0)
        history.events.insert(seal2, revoked)
        report = build_report(history)
        assert any(f.code == FindingCode.RULE_VIOLATION and "revoked member entered" in f.message
                   and f.round == 2 and f.node == SLS2[0] for f in report.findings)
        assert FindingCode.REVOKED_MEMBER in codes(report)
        history.events.remove(revoked)

        # A merge committed for a node that was no participant.
        outsider = LedgerEvent("MergeCommitted", {"round": 3, "id": node_key(SLS1[2]), "digest": digest("z")},
                               history.head_block, b"\x00" * 32, 99)
        history.events.append(outsider)
        report = build_report(history)
        assert any(f.code == FindingCode.RULE_VIOLATION and f.node == SLS1[2] for f in report.findings)


def test_export_writes_json_and_csv(clean_dir, tmp_path):
    out = tmp_path / "export"
    assert ledger_main(["export", "--data-dir", str(clean_dir), "--out", str(out)]) == 0
    data = json.loads((out / "ledger.json").read_text())
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3] and data["findings"] == []
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert len(rows) == 9 and rows[0]["participant"] == SLS1[0] and rows[0]["weight"] == "50"
    assert {r["node_id"] for r in csv.DictReader(open(out / "members.csv"))} >= set(SLS1)
    assert (out / "events.csv").exists() and (out / "findings.csv").exists()


def test_a_directory_without_a_ledger_is_an_error_naming_it(tmp_path, capsys):
    assert ledger_main(["verify", "--data-dir", str(tmp_path)]) == 2
    assert "ledger.json" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)
