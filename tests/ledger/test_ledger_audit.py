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

from .conftest import SENTINEL, SN2, SLS1, SLS2, build_swarm, digest, fp

WEIGHTS = [np.arange(12, dtype=np.float32).reshape(3, 4), np.ones(5, dtype=np.float32)]


def merged_digest_of(weights) -> bytes:
    layout = Layout.from_weights(weights)
    return weights_digest(layout, layout.flatten(weights))[0]


def sentinel_dir(tmp_path: Path, *, mismatch: bool = False, revoke: bool = False) -> Path:
    """An SN data directory (ledger.json + chain/) holding three sealed, merged rounds; round 1's
    receipts froze with every participant's bitmap, round 2's on a 2-of-3 majority."""
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
            if r == 1:
                for n in ids:
                    sn1.submit_receipts(r, 1, n, b"\x01\x01\x01", remaining_s=5)
                sn2.submit_receipts(r, 1, SLS2[0], b"\x01\x01\x00", remaining_s=99)  # capped at 30
            elif r == 2:
                for n in ids:
                    sn1.submit_receipts(r, 1, n, b"\x01\x01\x00")
                sn2.freeze_receipts(r, 1)
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
    assert "receipts phase 1: 3 submitted, frozen at 3" in shown
    assert f"receipts phase 1: 2 submitted, frozen at 2 by {SN2}" in shown
    boards = [r.receipts for r in report.rounds]
    assert [x["node"] for x in boards[0][0]["submissions"]] == [*SLS1[:2], *SLS2]
    assert boards[0][0]["submissions"][2]["remaining_s"] == 30 and boards[2] == []


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


def _receipt_event(history, name: str, args: dict) -> LedgerEvent:
    return LedgerEvent(name, args, history.head_block, b"\x00" * 32, 99)


def test_receipts_that_break_the_ledger_rules_are_named(clean_dir):
    """Hand-forged ReceiptsSubmitted / ReceiptsFrozen events, each against one rule of the
    contract's receipt boards: the first bitmap counts, nothing after the freeze, the frozen
    count is the submissions before it, and a freeze needs all participants or a majority."""
    sn1 = node_key(SENTINEL)

    def submitted(r, node, bits=b"\x01\x01\x01", phase=1, remaining=0):
        return _receipt_event(history, "ReceiptsSubmitted", {"round": r, "phase": phase, "id": node_key(node),
                                                             "bits": bits, "remainingS": remaining, "by": sn1})

    def frozen(r, count, phase=1):
        return _receipt_event(history, "ReceiptsFrozen", {"round": r, "phase": phase, "count": count, "by": sn1})

    def violations(*extra, before: int | None = None) -> list[str]:
        at = len(history.events) if before is None else before
        history.events[at:at] = list(extra)
        try:
            return [f.message for f in build_report(history).findings if f.code == FindingCode.RULE_VIOLATION]
        finally:
            del history.events[at:at + len(extra)]

    with open_data_dir(clean_dir) as history:
        assert violations() == []
        seal3 = _events(history, "RoundSealed")[2]
        # A second bitmap for round 2 phase 1 by a node that already submitted.
        found = violations(submitted(2, SLS1[0]), before=seal3)
        assert len(found) == 1 and "second receipt bitmap" in found[0]
        # Round 2 phase 2 frozen on one bitmap of three: no majority.
        found = violations(submitted(2, SLS1[1], phase=2), frozen(2, 1, phase=2),
                           before=seal3)
        assert len(found) == 1 and "neither all participants nor a strict majority" in found[0]
        # Round 3 (nothing submitted yet in the real history): a bitmap after the freeze is refused.
        found = violations(submitted(3, SLS1[0]), submitted(3, SLS1[1]), frozen(3, 2), submitted(3, SLS2[0]))
        assert any("after ReceiptsFrozen" in m for m in found) and "controller" in " ".join(found)
        # A frozen count that is not the number of bitmaps before it.
        found = violations(submitted(3, SLS1[0]), submitted(3, SLS1[1]), frozen(3, 3))
        assert len(found) == 1 and "count 3, but 2 bitmaps" in found[0]
        # A freeze with no bitmaps at all, and a bitmap of the wrong size, of bytes > 1, uncapped.
        found = violations(frozen(3, 0))
        assert len(found) == 1 and "0 of 3" in found[0]
        found = violations(submitted(3, SLS1[0], bits=b"\x01\x02", remaining=31))
        assert len(found) == 3
        # Receipts of a node that was no participant (SLS1[2] never checked in).
        found = violations(submitted(3, SLS1[2]))
        assert len(found) == 1 and "not a participant" in found[0]


def test_export_writes_json_and_csv(clean_dir, tmp_path):
    out = tmp_path / "export"
    assert ledger_main(["export", "--data-dir", str(clean_dir), "--out", str(out)]) == 0
    data = json.loads((out / "ledger.json").read_text())
    assert [r["round"] for r in data["rounds"]] == [1, 2, 3] and data["findings"] == []
    rows = list(csv.DictReader(open(out / "rounds.csv")))
    assert len(rows) == 9 and rows[0]["participant"] == SLS1[0] and rows[0]["weight"] == "50"
    assert {r["node_id"] for r in csv.DictReader(open(out / "members.csv"))} >= set(SLS1)
    assert (out / "events.csv").exists() and (out / "findings.csv").exists()
    receipts = list(csv.DictReader(open(out / "receipts.csv")))
    assert [(r["round"], r["phase"], r["node"], r["frozen_count"]) for r in receipts] == [
        ("1", "1", SLS1[0], "3"), ("1", "1", SLS1[1], "3"), ("1", "1", SLS2[0], "3"),
        ("2", "1", SLS1[0], "2"), ("2", "1", SLS1[1], "2")]
    assert receipts[2]["bits"] == "110" and receipts[2]["by"] == SN2


def test_a_directory_without_a_ledger_is_an_error_naming_it(tmp_path, capsys):
    assert ledger_main(["verify", "--data-dir", str(tmp_path)]) == 2
    assert "ledger.json" in capsys.readouterr().err
    shutil.rmtree(tmp_path, ignore_errors=True)
