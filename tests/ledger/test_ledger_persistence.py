"""The embedded chain survives kill -9, torn journal tails and compaction."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarm.ledger import STATUS_REVOKED, EmbeddedChain, LedgerError, node_key, open_or_deploy
from swarm.ledger.embedded import ARCHIVE_NAME, JOURNAL_NAME, MIN_KEEP_BLOCKS, _record

from .conftest import SLS1, build_swarm, digest

CHILD = Path(__file__).with_name("_chain_child.py")


def h(tag) -> bytes:
    return hashlib.sha256(str(tag).encode()).digest()


@pytest.mark.parametrize("mode", ["append", "compact"])
def test_sigkill_keeps_every_acknowledged_block(tmp_path, mode):
    data_dir = tmp_path / "sentinel"
    proc = subprocess.Popen([sys.executable, str(CHILD), str(data_dir), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while True:
            line = proc.stdout.readline()
            assert line, f"child exited early: {proc.stderr.read()}"
            lines.append(line)
            if line.startswith("{"):
                ready = json.loads(line)
                break
            assert time.monotonic() < deadline
        # Let it get some way into the next rounds so the kill hits live writes.
        for _ in range(3):
            lines.append(proc.stdout.readline())
        time.sleep(0.02)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    rest = proc.stdout.read()
    acknowledged = [int(x.split()[1]) for x in lines + rest.splitlines() if x.startswith("sealed ")]
    assert proc.returncode == -signal.SIGKILL and len(acknowledged) >= 3

    chain = EmbeddedChain(data_dir)
    try:
        assert chain.load_info["action"] in ("replayed", "truncated", "compacted")
        sn = open_or_deploy(chain.w3, data_dir, sentinel_node_id="site0/sn-1", fingerprint=h("fp-sn0"),
                            endpoint="10.0.0.1:30304")
        assert sn.address == ready["address"]
        assert sn.member_id_of_account(sn.account.address) == node_key("site0/sn-1")
        names = [f"site{i}/sl-1" for i in range(4)]
        members = {m.node_id: m for m in sn.members()}
        assert set(members) == {"site0/sn-1", "site9/sn-1", *names, "site9/sl-1"}
        assert members["site9/sl-1"].controller != sn.account.address
        assert members[names[2]].status == STATUS_REVOKED and sn.is_revoked(h("fp-" + names[2]))
        assert sn.config().config() == {"merge_method": "mean"} and sn.config().min_peers == 2
        assert sn.finished_count() == 1 and sn.is_finished(names[3])
        for r in range(1, 6):
            info = sn.round_info(r)
            assert info.sealed and info.participants == tuple(node_key(n) for n in names)
            assert info.weights == (r,) * 4
            assert info.digests == tuple(h(f"u{r}-{i}") for i in range(4))
            assert info.merged_digest == h(f"m{r}")
        # Every round whose receipt the child saw is on disk; nothing half-applied.
        last = sn.last_sealed_round()
        assert last >= max(acknowledged)
        for r in range(6, last + 1):
            assert sn.round_info(r).digests == (h(f"u{r}-0"), h(f"u{r}-1"))
        # The restarted sentinel carries on (its nonce comes from the chain).
        sn.check_in_and_seal(last + 1, names[:2], [1, 1], [h("next-0"), h("next-1")])
        assert sn.last_sealed_round() == last + 1
        events, _ = sn.events_since(0)
        assert sum(e.name == "RoundSealed" for e in events) == last + 1
    finally:
        chain.close()


def _seal_rounds(sn, first: int, count: int, merged: bool = False) -> None:
    for r in range(first, first + count):
        sn.check_in_and_seal(r, SLS1[:2], [1, 1], [digest(r)] * 2)
        if merged:
            sn.commit_merged_batch(r, SLS1[:2], [digest(f"m{r}")] * 2)


def test_torn_tail_and_uncommitted_records_are_dropped(tmp_path):
    d = tmp_path / "chain"
    chain = EmbeddedChain(d)
    sn1, _, _ = build_swarm(chain.w3, d, chain.dev_accounts[0])
    sn1.configure(1, "{}")
    _seal_rounds(sn1, 1, 2)
    chain.close()
    journal = d / JOURNAL_NAME
    good_size = journal.stat().st_size

    # A kill -9 mid-commit: complete records without their commit marker, then half a record.
    tail = _record(1, b"k" * 32, b"uncommitted") + _record(1, b"x" * 32, b"v" * 100)[:50]
    with open(journal, "ab") as fh:
        fh.write(tail)
    chain = EmbeddedChain(d)
    assert chain.load_info["action"] == "truncated"
    assert chain.load_info["dropped_bytes"] == len(tail)
    assert journal.stat().st_size == good_size
    assert b"k" * 32 not in chain._db.kv_store
    sn1 = open_or_deploy(chain.w3, d, sentinel_node_id="x", fingerprint=digest("x"), endpoint="x")
    assert sn1.last_sealed_round() == 2
    _seal_rounds(sn1, 3, 1)  # appends after the cut
    chain.close()

    chain = EmbeddedChain(d)
    assert chain.load_info["action"] == "replayed"
    sn1 = open_or_deploy(chain.w3, d, sentinel_node_id="x", fingerprint=digest("x"), endpoint="x")
    assert sn1.last_sealed_round() == 3
    chain.close()


def test_corrupt_last_commit_loses_only_that_block(tmp_path):
    d = tmp_path / "chain"
    chain = EmbeddedChain(d)
    sn1, _, _ = build_swarm(chain.w3, d, chain.dev_accounts[0])
    sn1.configure(1, "{}")
    _seal_rounds(sn1, 1, 3)
    head = chain.block_number
    chain.close()
    journal = d / JOURNAL_NAME
    data = bytearray(journal.read_bytes())
    data[-30] ^= 0xFF  # inside the final commit marker's record
    journal.write_bytes(bytes(data))

    chain = EmbeddedChain(d)
    try:
        assert chain.load_info["action"] == "truncated"
        assert chain.block_number == head - 1
        sn1 = open_or_deploy(chain.w3, d, sentinel_node_id="x", fingerprint=digest("x"), endpoint="x")
        assert sn1.last_sealed_round() == 2
        _seal_rounds(sn1, 3, 1)
        assert sn1.round_info(3).sealed
    finally:
        chain.close()


def test_compaction_keeps_state(tmp_path):
    d = tmp_path / "chain"
    chain = EmbeddedChain(d)
    sn1, _, _ = build_swarm(chain.w3, d, chain.dev_accounts[0])
    sn1.configure(1, "{}")
    _seal_rounds(sn1, 1, 3)
    chain.close()
    before = (d / JOURNAL_NAME).stat().st_size

    chain = EmbeddedChain(d, compact_ratio=1.0, compact_min_bytes=0)
    try:
        assert chain.load_info["action"] == "compacted"
        assert (d / JOURNAL_NAME).stat().st_size < before
        sn1 = open_or_deploy(chain.w3, d, sentinel_node_id="x", fingerprint=digest("x"), endpoint="x")
        assert sn1.last_sealed_round() == 3 and sn1.member_count() == 6
        _seal_rounds(sn1, 4, 1)
    finally:
        chain.close()
    chain = EmbeddedChain(d)
    assert open_or_deploy(chain.w3, d, sentinel_node_id="x", fingerprint=digest("x"),
                          endpoint="x").last_sealed_round() == 4
    chain.close()


def test_foreign_file_is_refused(tmp_path):
    d = tmp_path / "chain"
    d.mkdir()
    (d / JOURNAL_NAME).write_bytes(b"definitely not a journal")
    with pytest.raises(LedgerError, match="not a chain journal"):
        EmbeddedChain(d)


def test_open_or_deploy_refuses_another_chains_ledger(tmp_path):
    first = EmbeddedChain(tmp_path / "a")
    sn = open_or_deploy(first.w3, tmp_path / "a", sentinel_node_id="s", fingerprint=digest("s"), endpoint="e",
                        funder=first.dev_accounts[0])
    meta = json.loads((tmp_path / "a" / "ledger.json").read_text())
    assert meta["contract_address"] == sn.address and meta["account_key"] == "ledger.key"
    assert oct((tmp_path / "a" / "ledger.key").stat().st_mode & 0o777) == "0o600"
    first.close()
    # Same data dir, but a brand-new chain (journal deleted): refuse, do not redeploy.
    # (eth-tester genesis blocks made in the same second are identical, so the
    # refusal may come from the missing contract rather than the genesis hash.)
    (tmp_path / "a" / JOURNAL_NAME).unlink()
    second = EmbeddedChain(tmp_path / "a")
    with pytest.raises(LedgerError, match="another chain|no contract"):
        open_or_deploy(second.w3, tmp_path / "a", sentinel_node_id="s", fingerprint=digest("s"), endpoint="e")
    second.close()


def test_one_process_per_data_dir(tmp_path):
    first = EmbeddedChain(tmp_path / "chain")
    try:
        with pytest.raises(LedgerError, match="in use by another process"):
            EmbeddedChain(tmp_path / "chain")
    finally:
        first.close()
    EmbeddedChain(tmp_path / "chain").close()


def _ledger_state(sn, rounds: range) -> tuple:
    """Members, session, every round's merged digest, and the last rounds in full (their
    blocks are kept; older rounds' lists are in the archive)."""
    return (sorted((m.node_id, m.status, m.endpoint) for m in sn.members()), sn.config(), sn.last_sealed_round(),
            [sn.merged_digest(r) for r in rounds], [sn.round_info(r) for r in rounds[-20:]])


def test_compaction_prunes_old_blocks_and_keeps_the_ledger(tmp_path):
    d = tmp_path / "chain"
    # Compaction only when asked (huge threshold), the smallest block window allowed.
    chain = EmbeddedChain(d, compact_min_bytes=1 << 40, keep_blocks=MIN_KEEP_BLOCKS, keep_states=1)
    sn1, _, _ = build_swarm(chain.w3, d, chain.dev_accounts[0])
    sn1.configure(1, "{}")
    first_round_block = chain.block_number + 1
    rounds = MIN_KEEP_BLOCKS // 2 + 20
    _seal_rounds(sn1, 1, rounds, merged=True)
    state = _ledger_state(sn1, range(1, rounds + 1))
    head = chain.block_number
    recent, _ = sn1.events_since(head - 5)
    before = (d / JOURNAL_NAME).stat().st_size

    info = chain.compact()
    after = (d / JOURNAL_NAME).stat().st_size
    assert info["pruned_blocks"] == head - MIN_KEEP_BLOCKS and after < before / 2
    assert _ledger_state(sn1, range(1, rounds + 1)) == state  # the contract's storage is never pruned
    with pytest.raises(LedgerError, match="no longer serves"):
        sn1.round_info(1)
    assert sn1.events_since(head - 5)[0] == recent
    assert chain.w3.eth.get_block(0)["number"] == 0  # genesis stays (open_or_deploy checks it)
    # The pruned blocks' events are archived, one line per block, in order.
    lines = [json.loads(x) for x in (d / ARCHIVE_NAME).read_text().splitlines()]
    assert [x["block"] for x in lines] == list(range(1, head - MIN_KEEP_BLOCKS + 1))
    sealed_topic = "0x" + str(sn1._contract.events.RoundSealed().topic).removeprefix("0x")
    archived_seals = [x for x in lines if any(log["topics"][0] == sealed_topic for log in x["logs"])]
    assert archived_seals[0]["block"] == first_round_block
    # The chain carries on, and a second compaction archives nothing twice.
    _seal_rounds(sn1, rounds + 1, 3)
    chain.compact()
    lines2 = [json.loads(x) for x in (d / ARCHIVE_NAME).read_text().splitlines()]
    assert [x["block"] for x in lines2] == list(range(1, chain.block_number - MIN_KEEP_BLOCKS + 1))
    state = _ledger_state(sn1, range(1, rounds + 4))
    chain.close()

    chain = EmbeddedChain(d)
    try:
        sn1 = open_or_deploy(chain.w3, d, sentinel_node_id="x", fingerprint=digest("x"), endpoint="x")
        assert _ledger_state(sn1, range(1, rounds + 4)) == state
        _seal_rounds(sn1, rounds + 4, 1)
    finally:
        chain.close()



def test_a_torn_archive_line_is_cut_at_open(tmp_path):
    d = tmp_path / "chain"
    d.mkdir()
    lines = b'{"block":1,"logs":[]}\n{"block":2,"logs":[]}\n'
    (d / ARCHIVE_NAME).write_bytes(lines + b'{"block":3,"lo')  # killed mid-append
    EmbeddedChain(d).close()
    assert (d / ARCHIVE_NAME).read_bytes() == lines
