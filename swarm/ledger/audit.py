"""Reading a swarm's ledger back for a person: show, verify, export.

The ledger records every membership change, every round's participant set with
weights and update digests, each merged digest and every disagreement, as
contract events. ``read_history`` gathers those events and the contract's
current state from one of three sources:

- an offline copy of a sentinel's data directory (``open_data_dir``): the
  embedded chain is replayed from a temporary copy of its journal, and the logs
  of blocks the chain has pruned come from its ``chain-archive.jsonl``;
- any JSON-RPC chain (``--ledger-url``, e.g. anvil) given the contract address;
- a running SN's ledger endpoint (the sentinel's LedgerPeer service).

``audit`` then replays the events through the contract's rules, independently
of the contract, and compares the result with the state the contract holds.
Anything that breaks a rule, disagrees, or calls for a person's attention is a
``Finding`` with a typed ``FindingCode``.
"""

from __future__ import annotations

import csv
import enum
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3

from . import client as _c
from .client import (MAX_PARTICIPANTS, MAX_WEIGHT, MIN_WEIGHT, ROLE_NAMES, ROLE_SL, ROLE_SN,
                     STATUS_ACTIVE, STATUS_INACTIVE, STATUS_NAMES, STATUS_REVOKED, ZERO32,
                     LedgerError, LedgerEvent, SessionConfig)
from .embedded import ARCHIVE_NAME, JOURNAL_NAME, LEDGER_META_NAME, EmbeddedChain

MAX_REMAINING_S = 30  # the contract caps ReceiptsSubmitted.remainingS at this


class FindingCode(str, enum.Enum):
    """What ``verify`` found. Each names one rule or one disagreement."""

    MERGE_MISMATCH = "MERGE_MISMATCH"  # a participant committed another digest than the majority's
    MERGE_FAILED = "MERGE_FAILED"  # no merged digest could reach a majority of the participants
    REVOKED_MEMBER = "REVOKED_MEMBER"  # a certificate was revoked during the session
    MODEL_MISMATCH = "MODEL_MISMATCH"  # a saved model is not the last round's merged model
    MODEL_UNREADABLE = "MODEL_UNREADABLE"  # a --model file could not be read as weights
    NO_MERGED_ROUND = "NO_MERGED_ROUND"  # models were given but no round was merged
    RULE_VIOLATION = "RULE_VIOLATION"  # an event the contract's rules forbid
    RECORD_MISMATCH = "RECORD_MISMATCH"  # a round's RoundSealed lists differ from the contract's hash
    STATE_MISMATCH = "STATE_MISMATCH"  # replayed history disagrees with the contract's state
    MISSING_HISTORY = "MISSING_HISTORY"  # blocks or rounds whose events could not be read


@dataclass(frozen=True)
class Finding:
    code: FindingCode
    message: str
    round: int | None = None
    node: str | None = None
    block: int | None = None

    def line(self) -> str:
        where = ", ".join(p for p in (f"round {self.round}" if self.round is not None else "",
                                      self.node or "",
                                      f"block {self.block}" if self.block is not None else "") if p)
        return f"{self.code.value}: {self.message}" + (f" ({where})" if where else "")


@dataclass(frozen=True)
class RoundState:
    """A round as the contract's ``roundInfo`` view returns it."""

    sealed: bool
    record: bytes
    merged: bytes | None
    sealed_at: int
    sealed_block: int
    check_in_count: int


@dataclass(frozen=True)
class MemberState:
    id: bytes
    node_id: str
    role: int
    fingerprint: bytes
    endpoint: str
    status: int
    controller: str
    finished: bool


@dataclass
class LedgerHistory:
    """Everything the audit reads: the contract's events and its current state."""

    source: str
    contract_address: str
    chain_id: int
    first_block: int
    head_block: int
    events: list[LedgerEvent]
    members: list[MemberState]
    config: SessionConfig
    last_sealed_round: int
    finished_count: int
    rounds: dict[int, RoundState]  # every round named by an event, plus any unexplained gaps
    missing_blocks: list[tuple[int, int]] = field(default_factory=list)


# ---------------------------------------------------------------- reading


class _Reader:
    """The contract's views and log decoding, on any Web3 (no account needed)."""

    def __init__(self, w3: Web3, address: str):
        self.w3 = w3
        self.block: int | str = "latest"  # the views are read at the block the events end at
        self.address = to_checksum_address(address)
        self.contract = w3.eth.contract(address=self.address, abi=_c.load_artifact()["abi"])
        self._by_topic = _c.event_topics(self.contract)

    def call(self, name: str, *args):
        return getattr(self.contract.functions, name)(*args).call(block_identifier=self.block)

    def decode(self, log: dict) -> LedgerEvent | None:
        return _c.decode_event(self._by_topic, self.address, log)

    def logs(self, start: int, end: int, chunk: int = 1_000) -> list[LedgerEvent]:
        # Bounded ranges: each request stays short (a tunnelled one holds the sentinel's
        # chain lock block by block, and has a per-request deadline).
        out: list[LedgerEvent] = []
        while start <= end:
            stop = min(end, start + chunk - 1)
            for log in self.w3.eth.get_logs({"address": self.address, "fromBlock": start, "toBlock": stop}):
                event = self.decode(log)
                if event is not None:
                    out.append(event)
            start = stop + 1
        return out


def _record_events(reader: _Reader, record: dict) -> list[LedgerEvent]:
    """The ledger events of one block record (an archive line, or ``EmbeddedChain.block_records``)."""
    events = []
    for index, raw in enumerate(record["logs"]):
        log = {"address": raw["address"], "topics": [HexBytes(t) for t in raw["topics"]],
               "data": HexBytes(raw["data"]), "blockNumber": record["block"],
               "blockHash": HexBytes(record["hash"]), "transactionHash": HexBytes(raw["tx"]),
               "transactionIndex": 0, "logIndex": raw.get("index", index)}
        event = reader.decode(log)
        if event is not None:
            events.append(event)
    return events


def _archived_events(reader: _Reader, path: Path, first_block: int) -> tuple[list[LedgerEvent], int]:
    """Events of the blocks an embedded chain pruned, from its archive; and the last block archived."""
    events: list[LedgerEvent] = []
    last = 0
    if not path.exists():
        return events, last
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            record = json.loads(line)
            last = max(last, int(record["block"]))
            if record["block"] >= first_block:
                events += _record_events(reader, record)
    return events, last


def read_history(w3: Web3, contract_address: str, *, first_block: int = 0, source: str = "",
                 archive: Path | None = None,
                 block_records: Callable[[int, int], list[dict]] | None = None) -> LedgerHistory:
    """Gather a ledger's events (from ``first_block``) and its state through ``w3``.

    ``archive``: an embedded chain's chain-archive.jsonl, holding the logs of pruned blocks.
    ``block_records``: reads blocks' logs directly (an embedded chain's ``block_records``)
    instead of ``eth_getLogs``.
    """
    reader = _Reader(w3, contract_address)
    if not w3.eth.get_code(reader.address):
        raise LedgerError("audit", f"no ledger contract at {reader.address} on {source or 'this chain'}")
    head = int(w3.eth.block_number)
    # The state at the last block read, not "latest": a running swarm keeps writing (nodes
    # leaving turn inactive) while the events are read, and the two must describe one block.
    reader.block = head
    events: list[LedgerEvent] = []
    missing: list[tuple[int, int]] = []
    start = first_block
    if archive is not None:
        archived, last_archived = _archived_events(reader, archive, first_block)
        events += archived
        start = max(start, last_archived + 1)
    try:
        if block_records is None:
            events += reader.logs(start, head)
        else:
            for record in block_records(start, head):
                events += _record_events(reader, record)
    except Exception as exc:  # noqa: BLE001 - a pruned range fails differently per chain
        raise LedgerError("audit", f"cannot read the ledger's events in blocks {start}..{head}: {exc}") from exc
    events.sort(key=lambda e: (e.block_number, e.log_index))

    count = reader.call("memberCount")
    members = []
    for i in range(count):
        key = bytes(reader.call("memberIdAt", i))
        m = reader.call("getMember", key)
        members.append(MemberState(key, m[0], m[1], bytes(m[2]), m[3], m[4], to_checksum_address(m[6]),
                                   bool(reader.call("isFinished", key))))
    configured, min_peers, text = reader.call("getConfig")
    last_sealed = int(reader.call("lastSealedRound"))
    rounds: dict[int, RoundState] = {}
    named = {int(e.args["round"]) for e in events if "round" in e.args}
    wanted = set(named)
    if _has_gaps(named, last_sealed):
        wanted |= set(range(1, last_sealed + 1))
    for r in sorted(wanted):
        rounds[r] = _round_state(reader.call("roundInfo", r))
    return LedgerHistory(source=source, contract_address=reader.address, chain_id=int(w3.eth.chain_id),
                         first_block=first_block, head_block=head, events=events, members=members,
                         config=SessionConfig(configured, min_peers, text), last_sealed_round=last_sealed,
                         finished_count=int(reader.call("finishedCount")), rounds=rounds,
                         missing_blocks=missing)


def _has_gaps(named: set[int], last_sealed: int) -> bool:
    # Rounds may legally be skipped; a gap costs one view call per missing number to tell.
    return bool(last_sealed) and len(named & set(range(1, last_sealed + 1))) < last_sealed


def _round_state(raw) -> RoundState:
    sealed, record, merged, sealed_at, sealed_block, count = raw
    merged = bytes(merged)
    return RoundState(bool(sealed), bytes(record), None if merged == ZERO32 else merged, int(sealed_at),
                      int(sealed_block), int(count))


@contextmanager
def open_data_dir(data_dir: str | Path) -> Iterator[LedgerHistory]:
    """The ledger history of a copy of a sentinel's data directory, read offline.

    The chain is replayed from a temporary copy of its journal, so the directory
    given is never written (nor locked) and may belong to a running SN. A
    sentinel on an external chain (``--ledger-url``) has no embedded chain here:
    read it with ``read_history`` on that chain instead.
    """
    data_dir = Path(data_dir)
    meta_path = data_dir / LEDGER_META_NAME
    if not meta_path.exists():
        raise LedgerError("audit", f"{data_dir} has no {LEDGER_META_NAME}: not a sentinel's data directory")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    chain_dir = data_dir / "chain"
    journal = chain_dir / JOURNAL_NAME
    if not journal.exists():
        raise LedgerError("audit", f"{data_dir} holds no embedded chain ({journal} is missing); its ledger is "
                                   f"on an external chain: use --ledger-url URL --contract "
                                   f"{meta.get('contract_address')}")
    with tempfile.TemporaryDirectory(prefix="swarm-audit-") as tmp:
        shutil.copy2(journal, Path(tmp) / JOURNAL_NAME)
        chain = EmbeddedChain(tmp)
        try:
            genesis = chain.w3.eth.get_block(0)["hash"].hex()
            if meta.get("genesis_hash") not in (None, genesis):
                raise LedgerError("audit", f"{journal} holds another chain than {meta_path} records")
            archive = chain_dir / ARCHIVE_NAME
            yield read_history(chain.w3, meta["contract_address"], first_block=int(meta.get("deploy_block", 0)),
                               source=f"embedded chain in {data_dir}", archive=archive,
                               block_records=chain.block_records)
        finally:
            chain.close()


# ---------------------------------------------------------------- the report


def _hex(value: bytes | None) -> str:
    return "" if value is None else "0x" + bytes(value).hex()


@dataclass
class RoundRecord:
    round: int
    sealed_block: int | None
    sealed_at: int | None
    sealed_by: str
    participants: list[str]
    weights: list[int]
    update_digests: list[str]
    merged_digest: str
    committed: list[str]  # the majority that committed merged_digest (MergeCommitted votes)
    disagreements: list[dict]  # MergeMismatch: node, expected, actual
    # Receipt bitmaps (several SNs), one entry per phase: {"phase", "submissions": [{"node",
    # "bits", "remaining_s", "by", "block"}], "frozen_count", "frozen_by", "frozen_block"}.
    receipts: list[dict] = field(default_factory=list)
    merge: str = "pending"  # pending | agreed (a strict majority) | failed (none possible)


@dataclass
class Report:
    """What ``show`` prints and ``export`` writes; ``findings`` is what ``verify`` exits on."""

    source: str
    contract_address: str
    chain_id: int
    blocks: tuple[int, int]
    config: dict
    members: list[dict]
    rounds: list[RoundRecord]
    membership_changes: list[dict]
    revocations: list[dict]
    finished: list[dict]
    findings: list[Finding]

    def to_json(self) -> dict:
        out = asdict(self)
        out["findings"] = [{**asdict(f), "code": f.code.value} for f in self.findings]
        return out


class _Replay:
    """The contract's rules applied to its own events, in order (see SwarmLedger.vy)."""

    def __init__(self, history: LedgerHistory):
        self.h = history
        self.findings: list[Finding] = []
        self.members: dict[bytes, dict] = {}
        self.by_fingerprint: dict[bytes, bytes] = {}
        self.revoked: set[bytes] = set()
        self.sn_account: dict[bytes, str] = {}  # SN id -> the account it signs with
        self.configured = False
        self.min_peers = 0
        self.last_sealed = 0
        self.check_ins: dict[bytes, tuple[int, int, bytes]] = {}  # id -> (round, weight, digest)
        self.participant_in: dict[bytes, int] = {}
        self.sealed_in_round: dict[int, set[bytes]] = {}
        self.merged: dict[int, bytes] = {}  # the agreed digest (a strict majority's)
        self.votes: dict[int, dict[bytes, tuple[bytes, LedgerEvent]]] = {}  # round -> id -> vote
        self.failed: set[int] = set()
        self.finished: set[bytes] = set()
        self.rounds: dict[int, RoundRecord] = {}
        self.changes: list[dict] = []
        self.revocations: list[dict] = []
        self.finished_log: list[dict] = []
        # (round, phase) -> submitting ids in order, and whether ReceiptsFrozen came
        self.receipt_ids: dict[tuple[int, int], list[bytes]] = {}
        self.receipts_frozen: set[tuple[int, int]] = set()

    def name(self, key: bytes) -> str:
        m = self.members.get(bytes(key))
        return m["node_id"] if m else _hex(key)

    def bad(self, code: FindingCode, message: str, event: LedgerEvent | None = None,
            round: int | None = None, node: bytes | None = None) -> None:
        self.findings.append(Finding(code, message, round, self.name(node) if node is not None else None,
                                     event.block_number if event else None))

    def run(self) -> None:
        # The constructor registers the sentinel; its MemberRegistered comes first.
        for event in self.h.events:
            handler = getattr(self, f"on_{event.name}", None)
            if handler is not None:
                handler(event, event.args)

    # -- membership --

    def on_MemberRegistered(self, ev: LedgerEvent, a) -> None:
        key, fp = bytes(a["id"]), bytes(a["fingerprint"])
        if keccak(text=a["nodeId"]) != key:
            self.bad(FindingCode.RULE_VIOLATION, f"member id is not keccak256 of {a['nodeId']!r}", ev, node=key)
        if fp in self.revoked:
            self.bad(FindingCode.RULE_VIOLATION, "registered with a revoked certificate", ev, node=key)
        old = self.members.get(key)
        if old is None:
            if self.by_fingerprint.get(fp, key) != key:
                self.bad(FindingCode.RULE_VIOLATION, f"certificate already registered to "
                                                     f"{self.name(self.by_fingerprint[fp])}", ev, node=key)
            self.by_fingerprint[fp] = key
        else:
            if old["status"] == STATUS_REVOKED:
                self.bad(FindingCode.RULE_VIOLATION, "a revoked member registered again", ev, node=key)
            if old["fingerprint"] != fp or old["role"] != a["role"]:
                self.bad(FindingCode.RULE_VIOLATION, "re-registered with another certificate or role", ev,
                         node=key)
        if bool(a["isNew"]) != (old is None):
            self.bad(FindingCode.RULE_VIOLATION, "isNew does not match the history", ev, node=key)
        self.members[key] = {"node_id": a["nodeId"], "role": a["role"], "fingerprint": fp,
                             "endpoint": a["endpoint"], "status": STATUS_ACTIVE,
                             "controller": to_checksum_address(a["controller"]), "registered_block":
                                 old["registered_block"] if old else ev.block_number}
        if a["role"] == ROLE_SN:
            self.sn_account = {k: v for k, v in self.sn_account.items() if k != key}
            self.sn_account[key] = to_checksum_address(a["controller"])
        self.changes.append({"block": ev.block_number, "event": "registered" if old is None else "re-registered",
                             "node": a["nodeId"], "role": ROLE_NAMES.get(a["role"], str(a["role"])),
                             "endpoint": a["endpoint"], "by": "", "detail": ""})

    def _actor(self, ev: LedgerEvent, by: bytes, active_only: bool = True) -> str | None:
        m = self.members.get(bytes(by))
        if m is None or m["role"] != ROLE_SN:
            self.bad(FindingCode.RULE_VIOLATION, f"{ev.name} by {_hex(by)}, which is not an SN member", ev)
            return None
        if m["status"] == STATUS_REVOKED or (active_only and m["status"] != STATUS_ACTIVE):
            self.bad(FindingCode.RULE_VIOLATION, f"{ev.name} by SN {m['node_id']}, which is "
                                                 f"{STATUS_NAMES[m['status']]}", ev)
        return self.sn_account.get(bytes(by))

    def on_StatusChanged(self, ev, a) -> None:
        key = bytes(a["id"])
        account = self._actor(ev, a["by"], active_only=False)
        m = self.members.get(key)
        if m is None:
            self.bad(FindingCode.RULE_VIOLATION, "status change of an unknown member", ev, node=key)
            return
        if account is not None and m["controller"] != account:
            self.bad(FindingCode.RULE_VIOLATION, f"status changed by {self.name(a['by'])}, not its controller",
                     ev, node=key)
        if m["status"] == STATUS_REVOKED or a["status"] not in (STATUS_ACTIVE, STATUS_INACTIVE):
            self.bad(FindingCode.RULE_VIOLATION, f"status set to {a['status']} on a "
                                                 f"{STATUS_NAMES.get(m['status'])} member", ev, node=key)
        m["status"] = a["status"]
        self.changes.append({"block": ev.block_number, "event": STATUS_NAMES.get(a["status"], str(a["status"])),
                             "node": m["node_id"], "role": ROLE_NAMES.get(m["role"], ""), "endpoint": "",
                             "by": self.name(a["by"]), "detail": ""})

    def on_Revoked(self, ev, a) -> None:
        self._actor(ev, a["by"])
        fp, key = bytes(a["fingerprint"]), bytes(a["id"])
        if fp in self.revoked:
            self.bad(FindingCode.RULE_VIOLATION, f"certificate {fp.hex()[:16]}… revoked twice", ev)
        self.revoked.add(fp)
        node = self.name(key) if key != ZERO32 else "(no member)"
        if key != ZERO32 and key in self.members:
            self.members[key]["status"] = STATUS_REVOKED
        self.revocations.append({"block": ev.block_number, "node": node, "fingerprint": _hex(fp),
                                 "reason": a["reason"], "by": self.name(a["by"])})
        self.changes.append({"block": ev.block_number, "event": "revoked", "node": node, "role": "",
                             "endpoint": "", "by": self.name(a["by"]), "detail": a["reason"]})
        # A revocation is evidence an auditor must see, even when every rule held.
        self.bad(FindingCode.REVOKED_MEMBER, f"certificate {fp.hex()[:16]}… of {node} revoked by "
                                             f"{self.name(a['by'])}: {a['reason'] or 'no reason given'}", ev,
                 node=key if key != ZERO32 else None)

    def on_Configured(self, ev, a) -> None:
        self._actor(ev, a["by"])
        if self.configured:
            self.bad(FindingCode.RULE_VIOLATION, "configured twice", ev)
        if not 1 <= a["minPeers"] <= MAX_PARTICIPANTS:
            self.bad(FindingCode.RULE_VIOLATION, f"minPeers {a['minPeers']} outside 1..{MAX_PARTICIPANTS}", ev)
        self.configured, self.min_peers = True, int(a["minPeers"])

    # -- rounds --

    def _open(self, ev, r: int) -> None:
        if self.configured and len(self.finished) >= self.min_peers:
            self.bad(FindingCode.RULE_VIOLATION, f"{ev.name} after the swarm was done "
                                                 f"({len(self.finished)} of minPeers {self.min_peers} finished)",
                     ev, round=r)
        if r == 0 or r <= self.last_sealed:
            self.bad(FindingCode.RULE_VIOLATION, f"{ev.name} for round {r}, not after the last sealed "
                                                 f"round {self.last_sealed}", ev, round=r)

    def on_CheckedIn(self, ev, a) -> None:
        r = int(a["round"])
        account = self._actor(ev, a["by"])
        self._open(ev, r)
        ids, weights, digests = a["ids"], a["weights"], a["digests"]
        if not ids or not len(ids) == len(weights) == len(digests):
            self.bad(FindingCode.RULE_VIOLATION, "check-in lists are empty or of different lengths", ev, round=r)
        for key, w, d in zip(ids, weights, digests):
            key = bytes(key)
            m = self.members.get(key)
            if m is None or m["role"] != ROLE_SL:
                self.bad(FindingCode.RULE_VIOLATION, "checked in, but not an SL member", ev, round=r, node=key)
            else:
                if account is not None and m["controller"] != account:
                    self.bad(FindingCode.RULE_VIOLATION, f"checked in by {self.name(a['by'])}, not its "
                                                         "controller", ev, round=r, node=key)
                if m["status"] != STATUS_ACTIVE:
                    self.bad(FindingCode.RULE_VIOLATION, f"checked in while {STATUS_NAMES[m['status']]}", ev,
                             round=r, node=key)
            if not MIN_WEIGHT <= w <= MAX_WEIGHT:
                self.bad(FindingCode.RULE_VIOLATION, f"weight {w} outside {MIN_WEIGHT}..{MAX_WEIGHT}", ev,
                         round=r, node=key)
            if bytes(d) == ZERO32:
                self.bad(FindingCode.RULE_VIOLATION, "empty update digest", ev, round=r, node=key)
            if self.check_ins.get(key, (None,))[0] == r:
                self.bad(FindingCode.RULE_VIOLATION, "checked in twice", ev, round=r, node=key)
            self.check_ins[key] = (r, int(w), bytes(d))

    def on_RoundSealed(self, ev, a) -> None:
        r = int(a["round"])
        self._actor(ev, a["by"])
        if not self.configured:
            self.bad(FindingCode.RULE_VIOLATION, "sealed before the session was configured", ev, round=r)
        self._open(ev, r)
        ids, weights, digests = [bytes(x) for x in a["participants"]], list(a["weights"]), \
            [bytes(x) for x in a["digests"]]
        if len(ids) < self.min_peers:
            self.bad(FindingCode.RULE_VIOLATION, f"sealed with {len(ids)} participants, below minPeers "
                                                 f"{self.min_peers}", ev, round=r)
        seen: set[bytes] = set()
        for key, w, d in zip(ids, weights, digests):
            mine = self.check_ins.get(key)
            if key in seen:
                self.bad(FindingCode.RULE_VIOLATION, "participant listed twice", ev, round=r, node=key)
            seen.add(key)
            if mine is None or mine[0] != r:
                self.bad(FindingCode.RULE_VIOLATION, "sealed into the round without checking in", ev, round=r,
                         node=key)
            elif (mine[1], mine[2]) != (w, d):
                self.bad(FindingCode.RULE_VIOLATION, "sealed weight or digest differs from its check-in", ev,
                         round=r, node=key)
            if self.members.get(key, {}).get("status") == STATUS_REVOKED:
                self.bad(FindingCode.RULE_VIOLATION, "a revoked member entered the round", ev, round=r, node=key)
            self.participant_in[key] = r
        self.last_sealed = r
        self.sealed_in_round[r] = seen
        record = keccak(abi_encode(["bytes32[]", "uint32[]", "bytes32[]"], [ids, weights, digests]))
        state = self.h.rounds.get(r)
        if state is None or not state.sealed:
            self.bad(FindingCode.STATE_MISMATCH, "the contract does not hold this round as sealed", ev, round=r)
        elif state.record != record:
            self.bad(FindingCode.RECORD_MISMATCH, "the RoundSealed lists do not hash to the contract's record",
                     ev, round=r)
        self.rounds[r] = RoundRecord(
            round=r, sealed_block=ev.block_number,
            sealed_at=state.sealed_at if state is not None and state.sealed else None,
            sealed_by=self.name(a["by"]), participants=[self.name(k) for k in ids], weights=weights,
            update_digests=[_hex(d) for d in digests], merged_digest="", committed=[], disagreements=[])

    def _participant(self, ev, r: int, key: bytes, a) -> bool:
        account = self._actor(ev, a["by"]) if "by" in a else None
        m = self.members.get(key)
        if m is None:
            self.bad(FindingCode.RULE_VIOLATION, "merge commit by an unknown member", ev, round=r, node=key)
            return False
        if account is not None and m["controller"] != account:
            self.bad(FindingCode.RULE_VIOLATION, "merge committed by an SN that is not its controller", ev,
                     round=r, node=key)
        if m["status"] == STATUS_REVOKED:
            self.bad(FindingCode.RULE_VIOLATION, "a revoked member committed a merged digest", ev, round=r, node=key)
        if r not in self.sealed_in_round:
            self.bad(FindingCode.RULE_VIOLATION, "merge committed for a round not sealed", ev, round=r, node=key)
        elif self.participant_in.get(key) != r:
            self.bad(FindingCode.RULE_VIOLATION, "merge committed by a node that was not a participant", ev,
                     round=r, node=key)
        return True

    def _tally(self, r: int) -> tuple[dict[bytes, int], int]:
        counts: dict[bytes, int] = {}
        for digest, _ in self.votes.get(r, {}).values():
            counts[digest] = counts.get(digest, 0) + 1
        return counts, len(self.sealed_in_round.get(r, ()))

    def on_MergeCommitted(self, ev, a) -> None:
        """A participant's vote: its first commit while the round has no agreed digest."""
        r, key, digest = int(a["round"]), bytes(a["id"]), bytes(a["digest"])
        self._participant(ev, r, key, a)
        votes = self.votes.setdefault(r, {})
        if r in self.merged:
            self.bad(FindingCode.RULE_VIOLATION, "a vote after the round's digest was agreed", ev,
                     round=r, node=key)
        elif key in votes:
            self.bad(FindingCode.RULE_VIOLATION, "a participant's second vote", ev, round=r, node=key)
        else:
            votes[key] = (digest, ev)

    def on_MergeAgreed(self, ev, a) -> None:
        """The first digest a strict majority of the sealed participants voted for."""
        r, digest = int(a["round"]), bytes(a["digest"])
        counts, size = self._tally(r)
        if r in self.merged or r in self.failed:
            self.bad(FindingCode.RULE_VIOLATION, "a second merge decision for the round", ev, round=r)
            return
        if counts.get(digest, 0) != a["votes"] or 2 * counts.get(digest, 0) <= size \
                or a["participants"] != size:
            self.bad(FindingCode.RULE_VIOLATION, f"agreed with {counts.get(digest, 0)} of {size} "
                                                 f"participants' votes, not a strict majority", ev, round=r)
        self.merged[r] = digest
        record = self.rounds.get(r)
        if record is not None:
            record.merged_digest, record.merge = _hex(digest), "agreed"
        for key, (vote, at) in self.votes.get(r, {}).items():
            if vote == digest:
                if record is not None:
                    record.committed.append(self.name(key))
                continue
            # Committed before the majority formed (perhaps first): outvoted, and named.
            if record is not None:
                record.disagreements.append({"node": self.name(key), "expected": _hex(digest),
                                             "actual": _hex(vote), "block": at.block_number})
            self.bad(FindingCode.MERGE_MISMATCH, f"committed merged digest {vote.hex()[:16]}…, the "
                                                 f"majority's is {digest.hex()[:16]}…", at, round=r, node=key)

    def on_MergeFailed(self, ev, a) -> None:
        r = int(a["round"])
        counts, size = self._tally(r)
        votes, top = sum(counts.values()), max(counts.values(), default=0)
        if r in self.merged or r in self.failed or (votes, top, size) != \
                (a["votes"], a["topVotes"], a["participants"]) or 2 * (top + size - votes) > size:
            self.bad(FindingCode.RULE_VIOLATION, "MergeFailed while a majority was still possible "
                                                 "(or decided twice)", ev, round=r)
        self.failed.add(r)
        if r in self.rounds:
            self.rounds[r].merge = "failed"
        self.bad(FindingCode.MERGE_FAILED, f"{votes} of {size} participants committed {len(counts)} "
                                           f"different merged digests: none can reach a majority", ev, round=r)

    def on_MergeMismatch(self, ev, a) -> None:
        r, key = int(a["round"]), bytes(a["id"])
        expected, actual = bytes(a["expected"]), bytes(a["actual"])
        self._participant(ev, r, key, a)
        if self.merged.get(r) != expected:
            self.bad(FindingCode.RULE_VIOLATION, "MergeMismatch expects another digest than the round's "
                                                 "agreed one", ev, round=r, node=key)
        if r in self.rounds:
            self.rounds[r].disagreements.append({"node": self.name(key), "expected": _hex(expected),
                                                 "actual": _hex(actual), "block": ev.block_number})
        self.bad(FindingCode.MERGE_MISMATCH, f"committed merged digest {actual.hex()[:16]}…, the round's is "
                                             f"{expected.hex()[:16]}…", ev, round=r, node=key)

    # -- receipt bitmaps (several SNs) --

    def _receipt_board(self, r: int, phase: int) -> dict | None:
        rec = self.rounds.get(r)
        if rec is None:
            return None
        for board in rec.receipts:
            if board["phase"] == phase:
                return board
        board = {"phase": phase, "submissions": [], "frozen_count": None, "frozen_by": "", "frozen_block": None}
        rec.receipts.append(board)
        rec.receipts.sort(key=lambda b: b["phase"])
        return board

    def _receipt_round(self, ev, r: int, phase: int) -> bool:
        if phase not in (1, 2):
            self.bad(FindingCode.RULE_VIOLATION, f"{ev.name} for phase {phase}, not 1 or 2", ev, round=r)
            return False
        if r not in self.sealed_in_round:
            self.bad(FindingCode.RULE_VIOLATION, f"{ev.name} for a round not sealed", ev, round=r)
            return False
        return True

    def on_ReceiptsSubmitted(self, ev, a) -> None:
        r, phase, key, bits = int(a["round"]), int(a["phase"]), bytes(a["id"]), bytes(a["bits"])
        account = self._actor(ev, a["by"])
        if not self._receipt_round(ev, r, phase):
            return
        m = self.members.get(key)
        if m is None:
            self.bad(FindingCode.RULE_VIOLATION, "receipts submitted for an unknown member", ev, round=r, node=key)
        else:
            if account is not None and m["controller"] != account:
                self.bad(FindingCode.RULE_VIOLATION, "receipts submitted by an SN that is not the node's "
                                                     "controller", ev, round=r, node=key)
            if m["status"] == STATUS_REVOKED:
                self.bad(FindingCode.RULE_VIOLATION, "a revoked member submitted receipts", ev, round=r, node=key)
        if self.participant_in.get(key) != r:
            self.bad(FindingCode.RULE_VIOLATION, "receipts submitted by a node that was not a participant of "
                                                 "the round (or after the next round sealed)", ev, round=r, node=key)
        size = len(self.sealed_in_round[r])
        if len(bits) != size:
            self.bad(FindingCode.RULE_VIOLATION, f"a receipt bitmap of {len(bits)} bytes, the round has {size} "
                                                 "participants", ev, round=r, node=key)
        if any(b > 1 for b in bits):
            self.bad(FindingCode.RULE_VIOLATION, "a receipt bitmap byte other than 0 or 1", ev, round=r, node=key)
        if int(a["remainingS"]) > MAX_REMAINING_S:
            self.bad(FindingCode.RULE_VIOLATION, f"remainingS {a['remainingS']} above the cap {MAX_REMAINING_S}",
                     ev, round=r, node=key)
        ids = self.receipt_ids.setdefault((r, phase), [])
        if key in ids:
            self.bad(FindingCode.RULE_VIOLATION, f"a second receipt bitmap for phase {phase} (the first one "
                                                 "counts)", ev, round=r, node=key)
            return
        if (r, phase) in self.receipts_frozen:
            self.bad(FindingCode.RULE_VIOLATION, f"receipts for phase {phase} submitted after ReceiptsFrozen",
                     ev, round=r, node=key)
            return
        ids.append(key)
        board = self._receipt_board(r, phase)
        if board is not None:
            board["submissions"].append({"node": self.name(key), "bits": "".join(str(b) for b in bits),
                                         "remaining_s": int(a["remainingS"]), "by": self.name(a["by"]),
                                         "block": ev.block_number})

    def on_ReceiptsFrozen(self, ev, a) -> None:
        r, phase, count = int(a["round"]), int(a["phase"]), int(a["count"])
        self._actor(ev, a["by"])
        if not self._receipt_round(ev, r, phase):
            return
        if (r, phase) in self.receipts_frozen:
            self.bad(FindingCode.RULE_VIOLATION, f"phase {phase} receipts frozen twice", ev, round=r)
            return
        self.receipts_frozen.add((r, phase))
        submitted = len(self.receipt_ids.get((r, phase), []))
        size = len(self.sealed_in_round[r])
        if count != submitted:
            self.bad(FindingCode.RULE_VIOLATION, f"phase {phase} receipts frozen with count {count}, but "
                                                 f"{submitted} bitmaps were submitted before it", ev, round=r)
        if submitted == 0 or (submitted != size and 2 * submitted <= size):
            self.bad(FindingCode.RULE_VIOLATION, f"phase {phase} receipts frozen with {submitted} of {size} "
                                                 "bitmaps: neither all participants nor a strict majority",
                     ev, round=r)
        board = self._receipt_board(r, phase)
        if board is not None:
            board.update(frozen_count=count, frozen_by=self.name(a["by"]), frozen_block=ev.block_number)

    def on_NodeFinished(self, ev, a) -> None:
        key = bytes(a["id"])
        if key not in self.members:
            self.bad(FindingCode.RULE_VIOLATION, "an unknown member finished", ev, node=key)
        elif self.members[key]["status"] == STATUS_REVOKED:
            self.bad(FindingCode.RULE_VIOLATION, "a revoked member finished", ev, node=key)
        if key in self.finished:
            self.bad(FindingCode.RULE_VIOLATION, "finished twice", ev, node=key)
        self.finished.add(key)
        if int(a["finishedCount"]) != len(self.finished):
            self.bad(FindingCode.RULE_VIOLATION, f"finishedCount {a['finishedCount']} but {len(self.finished)} "
                                                 "nodes finished in the history", ev, node=key)
        self.finished_log.append({"block": ev.block_number, "node": self.name(key),
                                  "finished_count": int(a["finishedCount"])})

    # -- against the contract's state --

    def compare_state(self) -> None:
        h = self.h
        for m in h.members:
            mine = self.members.get(m.id)
            if mine is None:
                self.findings.append(Finding(FindingCode.MISSING_HISTORY, "member with no registration event in "
                                             "the history read", node=m.node_id))
                continue
            for what, ours, theirs in (("status", mine["status"], m.status), ("fingerprint", mine["fingerprint"],
                                       m.fingerprint), ("endpoint", mine["endpoint"], m.endpoint),
                                       ("controller", mine["controller"], m.controller),
                                       ("finished", m.id in self.finished, m.finished)):
                if ours != theirs:
                    self.findings.append(Finding(FindingCode.STATE_MISMATCH, f"{what}: history gives {ours!r}, "
                                                 f"the contract holds {theirs!r}", node=m.node_id))
        if len(h.members) != len(self.members):
            self.findings.append(Finding(FindingCode.STATE_MISMATCH, f"{len(self.members)} members in the "
                                         f"history, {len(h.members)} in the contract"))
        if h.last_sealed_round != self.last_sealed:
            self.findings.append(Finding(FindingCode.MISSING_HISTORY if h.last_sealed_round > self.last_sealed
                                         else FindingCode.STATE_MISMATCH,
                                         f"the contract's last sealed round is {h.last_sealed_round}, the history's "
                                         f"{self.last_sealed}", round=h.last_sealed_round))
        if h.finished_count != len(self.finished):
            self.findings.append(Finding(FindingCode.STATE_MISMATCH, f"finishedCount {h.finished_count}, "
                                         f"{len(self.finished)} NodeFinished events"))
        if (h.config.configured, h.config.min_peers) != (self.configured, self.min_peers):
            self.findings.append(Finding(FindingCode.STATE_MISMATCH, "the session configuration differs from "
                                         "its Configured event"))
        for r, state in sorted(h.rounds.items()):
            if state.sealed and r not in self.sealed_in_round:
                self.findings.append(Finding(FindingCode.MISSING_HISTORY, f"sealed in block {state.sealed_block}, "
                                             "but its RoundSealed event is not in the history", round=r))
            if state.merged != self.merged.get(r):
                self.findings.append(Finding(FindingCode.STATE_MISMATCH, f"the contract's merged digest is "
                                             f"{_hex(state.merged) or 'none'}, the history's "
                                             f"{_hex(self.merged.get(r)) or 'none'}", round=r))


def build_report(history: LedgerHistory, models: Sequence[str | Path] = ()) -> Report:
    """Replays the history through the contract's rules; checks ``models`` against the last merge."""
    replay = _Replay(history)
    replay.run()
    replay.compare_state()
    findings = replay.findings
    if models:
        findings += check_models(models, replay.merged)
    members = []
    for m in history.members:
        mine = replay.members.get(m.id, {})
        members.append({"node_id": m.node_id, "id": _hex(m.id), "role": ROLE_NAMES.get(m.role, str(m.role)),
                        "status": STATUS_NAMES.get(m.status, str(m.status)), "fingerprint": _hex(m.fingerprint),
                        "endpoint": m.endpoint, "controller": m.controller, "finished": m.finished,
                        "registered_block": mine.get("registered_block")})
    config = {"configured": history.config.configured, "min_peers": history.config.min_peers,
              "config": history.config.config() if history.config.config_json else {}}
    return Report(source=history.source, contract_address=history.contract_address, chain_id=history.chain_id,
                  blocks=(history.first_block, history.head_block), config=config, members=members,
                  rounds=[replay.rounds[r] for r in sorted(replay.rounds)], membership_changes=replay.changes,
                  revocations=replay.revocations, finished=replay.finished_log, findings=findings)


# ---------------------------------------------------------------- models


def model_digest(path: str | Path) -> bytes:
    """The swarm digest of a saved model (a .npz as the NumPy callback saves it).

    Arrays named arr_0, arr_1, ... (np.savez of a list) are read as a list, other
    names as a dict in file order: the container the callback trained with.
    """
    from swarm.tensors import Layout, weights_digest

    path = Path(path)
    if path.suffix != ".npz":
        raise ValueError(f"{path}: only .npz models can be checked (save the final model with the NumPy "
                         "callback's default, or export the weights to .npz)")
    with np.load(path, allow_pickle=False) as data:
        names = list(data.files)
        if names and all(n == f"arr_{i}" for i, n in enumerate(names)):
            weights: Any = [data[n] for n in names]
        else:
            weights = {n: data[n] for n in names}
    layout = Layout.from_weights(weights)
    return weights_digest(layout, layout.flatten(weights))[0]


def check_models(models: Iterable[str | Path], merged: dict[int, bytes]) -> list[Finding]:
    if not merged:
        return [Finding(FindingCode.NO_MERGED_ROUND, "models were given, but no round has a merged digest")]
    last = max(merged)
    findings = []
    for path in models:
        try:
            digest = model_digest(path)
        except (OSError, ValueError) as error:
            findings.append(Finding(FindingCode.MODEL_UNREADABLE, str(error), node=str(path)))
            continue
        if digest != merged[last]:
            findings.append(Finding(FindingCode.MODEL_MISMATCH, f"{path} has digest {digest.hex()[:16]}…, the "
                                    f"last merged round's is {merged[last].hex()[:16]}…", round=last,
                                    node=str(path)))
    return findings


# ---------------------------------------------------------------- output


def _short(value: str, n: int = 10) -> str:
    return value[:2 + n] + "…" if value.startswith("0x") and len(value) > 2 + n else value


def format_report(report: Report, verbose: bool = False) -> str:
    """The human-readable ledger: session, members, changes, rounds, finished nodes, findings."""
    out = [f"ledger {report.contract_address} on chain {report.chain_id} ({report.source}), "
           f"blocks {report.blocks[0]}..{report.blocks[1]}"]
    cfg = report.config
    out.append(f"session: {'min_peers ' + str(cfg['min_peers']) if cfg['configured'] else 'not configured'}"
               + (f", {json.dumps(cfg['config'], sort_keys=True)}" if cfg["config"] else ""))
    out.append(f"\nmembers ({len(report.members)}):")
    for m in report.members:
        out.append(f"  {m['node_id']:<24} {m['role']:<4} {m['status']:<8} {m['endpoint']:<22} "
                   f"cert {_short(m['fingerprint'], 16)}{'  finished' if m['finished'] else ''}")
    out.append(f"\nmembership changes ({len(report.membership_changes)}):")
    for c in report.membership_changes:
        out.append(f"  block {c['block']:>6}  {c['event']:<13} {c['node']}"
                   + (f" by {c['by']}" if c["by"] else "") + (f": {c['detail']}" if c["detail"] else ""))
    out.append(f"\nrounds ({len(report.rounds)}):")
    for r in report.rounds:
        when = (" at " + time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(r.sealed_at))) if r.sealed_at else ""
        out.append(f"  round {r.round}: sealed in block {r.sealed_block}{when} by {r.sealed_by}, merged "
                   f"{_short(r.merged_digest, 16) or '(none)'}"
                   + (f", {len(r.disagreements)} disagreement(s)" if r.disagreements else ""))
        for node, weight, digest in zip(r.participants, r.weights, r.update_digests):
            out.append(f"      {node:<24} weight {weight:>3}  update {digest if verbose else _short(digest, 16)}")
        for d in r.disagreements:
            out.append(f"      ! {d['node']} committed {_short(d['actual'], 16)}")
        for b in r.receipts:
            frozen = (f"frozen at {b['frozen_count']} by {b['frozen_by']} in block {b['frozen_block']}"
                      if b["frozen_count"] is not None else "not frozen")
            out.append(f"      receipts phase {b['phase']}: {len(b['submissions'])} submitted, {frozen}")
            for x in b["submissions"]:
                out.append(f"        {x['node']:<24} bits {x['bits']}  remaining {x['remaining_s']:>2}s  by {x['by']}")
    if report.revocations:
        out.append(f"\nrevocations ({len(report.revocations)}):")
        for v in report.revocations:
            out.append(f"  block {v['block']:>6}  {v['node']} ({_short(v['fingerprint'], 16)}) by {v['by']}: "
                       f"{v['reason']}")
    out.append(f"\nfinished ({len(report.finished)}): " + ", ".join(f["node"] for f in report.finished))
    return "\n".join(out)


def export(report: Report, out_dir: str | Path) -> list[Path]:
    """Writes ledger.json (everything) and members.csv, rounds.csv (one row per participant),
    receipts.csv (one row per receipt bitmap), events.csv (membership changes), findings.csv. Returns the paths written."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []

    def write_csv(name: str, header: list[str], rows: Iterable[Sequence]) -> None:
        path = out_dir / name
        with open(path, "w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)
        paths.append(path)

    path = out_dir / "ledger.json"
    path.write_text(json.dumps(report.to_json(), indent=1) + "\n", encoding="utf-8")
    paths.append(path)
    member_cols = ["node_id", "id", "role", "status", "fingerprint", "endpoint", "controller", "finished",
                   "registered_block"]
    write_csv("members.csv", member_cols, ([m[c] for c in member_cols] for m in report.members))
    write_csv("rounds.csv", ["round", "sealed_block", "sealed_at", "sealed_by", "participant", "weight",
                             "update_digest", "merged_digest", "disagreed_with"],
              ([r.round, r.sealed_block, r.sealed_at, r.sealed_by, node, w, d, r.merged_digest,
                next((x["actual"] for x in r.disagreements if x["node"] == node), "")]
               for r in report.rounds for node, w, d in zip(r.participants, r.weights, r.update_digests)))
    write_csv("receipts.csv", ["round", "phase", "node", "bits", "remaining_s", "by", "block", "frozen_count",
                               "frozen_by", "frozen_block"],
              ([r.round, b["phase"], x["node"], x["bits"], x["remaining_s"], x["by"], x["block"],
                b["frozen_count"], b["frozen_by"], b["frozen_block"]]
               for r in report.rounds for b in r.receipts for x in b["submissions"]))
    change_cols = ["block", "event", "node", "role", "endpoint", "by", "detail"]
    write_csv("events.csv", change_cols, ([c[k] for k in change_cols] for c in report.membership_changes))
    write_csv("findings.csv", ["code", "message", "round", "node", "block"],
              ([f.code.value, f.message, f.round, f.node, f.block] for f in report.findings))
    return paths
