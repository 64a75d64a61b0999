"""Typed Python access to the SwarmLedger contract through web3.py.

Every transaction is signed locally with the node's own key and sent with
``eth_sendRawTransaction``, so the chain never needs an unlocked account and a
joining SN can reach the sentinel's chain through a tunnel that forwards only
read methods and raw transactions. The transaction path is kept short because
ledger round trips are the control-plane cost of a round: the nonce is tracked
locally, the gas limit comes from a per-function formula (no
``eth_estimateGas``), and a transaction costs one send plus one receipt poll.
A reverted transaction is replayed as an ``eth_call`` only to recover the
contract's reason for the error message.
"""
from __future__ import annotations

import json
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound, Web3Exception
from web3.providers.base import JSONBaseProvider

from swarm.files import atomic_write

ARTIFACT_PATH = Path(__file__).resolve().parent / "contracts" / "SwarmLedger.json"

ROLE_SN, ROLE_SL, ROLE_SWCI = 1, 2, 3
ROLE_NAMES = {ROLE_SN: "sn", ROLE_SL: "sl", ROLE_SWCI: "swci"}
STATUS_ACTIVE, STATUS_INACTIVE, STATUS_REVOKED = 1, 2, 3
STATUS_NAMES = {STATUS_ACTIVE: "active", STATUS_INACTIVE: "inactive", STATUS_REVOKED: "revoked"}

#: Mirrors the contract's bounds (see SwarmLedger.vy); checked here so that an
#: oversized argument fails with a clear message instead of a bare revert.
MAX_PARTICIPANTS = 256
MIN_WEIGHT, MAX_WEIGHT = 0, 100  # 0: a participant without an update
MAX_NODE_ID_BYTES = 128
MAX_ENDPOINT_BYTES = 256
MAX_CONFIG_BYTES = 4096
MAX_REASON_BYTES = 256

ZERO32 = b"\x00" * 32
RECEIPT_TIMEOUT_S = 120.0
FEE_REFRESH_S = 60.0


class LedgerError(Exception):
    """A ledger operation failed; the message is ``"<function>: <reason>"``.

    ``reason`` is the contract's revert reason where there is one.
    """

    def __init__(self, function: str, reason: str, tx_hash: bytes | None = None):
        super().__init__(f"{function}: {reason}")
        self.function = function
        self.reason = reason
        self.tx_hash = tx_hash


@dataclass(frozen=True)
class Member:
    """One ledger member as stored on chain."""

    id: bytes
    node_id: str
    role: int
    fingerprint: bytes
    endpoint: str
    status: int
    last_seen: int
    controller: str

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, str(self.role))

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, str(self.status))

    @property
    def active(self) -> bool:
        return self.status == STATUS_ACTIVE

    @property
    def revoked(self) -> bool:
        return self.status == STATUS_REVOKED


@dataclass(frozen=True)
class RoundInfo:
    """A round as recorded on chain; participants/weights/digests are set once sealed."""

    round: int
    sealed: bool
    participants: tuple[bytes, ...]
    weights: tuple[int, ...]
    digests: tuple[bytes, ...]
    merged_digest: bytes | None
    sealed_at: int
    sealed_by: bytes | None
    check_in_count: int


class MergeStatus(IntEnum):
    """A round's merged digest on the ledger (the contract's mergeStatus codes)."""

    UNSEALED = 0
    PENDING = 1   # no digest has a strict majority of the participants yet; one still may
    AGREED = 2    # a strict majority committed MergeState.digest: the round's record
    FAILED = 3    # no digest can reach a majority any more: the merge failed for all


@dataclass(frozen=True)
class MergeState:
    round: int
    status: MergeStatus
    digest: bytes | None   # the agreed digest, only when AGREED
    votes: int             # participants whose digest was counted
    top_votes: int         # the most votes any one digest has
    participants: int


@dataclass(frozen=True)
class SessionConfig:
    """The training session's configuration, fixed once per ledger."""

    configured: bool
    min_peers: int
    config_json: str

    def config(self) -> dict:
        return json.loads(self.config_json) if self.config_json else {}


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event; ``args`` uses the contract's field names."""

    name: str
    args: Mapping[str, Any]
    block_number: int
    tx_hash: bytes
    log_index: int


@dataclass(frozen=True)
class TxResult:
    """A mined, successful ledger transaction and the events it emitted."""

    tx_hash: bytes
    block_number: int
    gas_used: int
    events: tuple[LedgerEvent, ...]

    def named(self, name: str) -> list[LedgerEvent]:
        return [e for e in self.events if e.name == name]


# ---------------------------------------------------------------- helpers

def event_topics(contract) -> dict:
    """topic0 -> web3 event class of a SwarmLedger contract object."""
    return {bytes(HexBytes(ev.topic)): ev for ev in contract.events}


def decode_event(by_topic: Mapping, address: str, log) -> LedgerEvent | None:
    """One raw log as a LedgerEvent; None if it is not one of this contract's events."""
    if to_checksum_address(log["address"]) != address or not log["topics"]:
        return None
    ev = by_topic.get(bytes(HexBytes(log["topics"][0])))
    if ev is None:
        return None
    data = ev.process_log(log)
    args = MappingProxyType({k: _plain(v) for k, v in data["args"].items()})
    return LedgerEvent(data["event"], args, int(data["blockNumber"]), bytes(data["transactionHash"]),
                       int(data["logIndex"]))


@cache
def load_artifact() -> dict:
    """The committed build artifact (abi, bytecode, compiler, source hash)."""
    return json.loads(ARTIFACT_PATH.read_text(encoding="utf-8"))


def node_key(node_id: str) -> bytes:
    """The contract's member id for a node: keccak256 of the node id string."""
    return keccak(text=node_id)


def _bytes32(value: bytes | str, what: str) -> bytes:
    if isinstance(value, str):
        value = bytes.fromhex(value[2:] if value.startswith(("0x", "0X")) else value)
    value = bytes(value)
    if len(value) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(value)}")
    return value


def _key(node: bytes | str) -> bytes:
    """A member id from either a node id string ("site/sl-1") or a 32-byte key."""
    if isinstance(node, str):
        return node_key(node)
    return _bytes32(node, "member id")


def _text(value: str, limit: int, what: str) -> str:
    if len(value.encode("utf-8")) > limit:
        raise ValueError(f"{what} is longer than {limit} bytes")
    return value


def _ids(nodes: Sequence[bytes | str]) -> list[bytes]:
    if len(nodes) > MAX_PARTICIPANTS:
        raise ValueError(f"{len(nodes)} ids: at most {MAX_PARTICIPANTS} per call")
    return [_key(n) for n in nodes]


def _opt32(value: bytes) -> bytes | None:
    value = bytes(value)
    return None if value == ZERO32 else value


def _plain(value: Any) -> Any:
    """Event arguments as plain Python values (bytes rather than HexBytes)."""
    if isinstance(value, HexBytes):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    return value


def _revert_reason(exc: BaseException) -> str | None:
    """The contract's reason from a web3/eth-tester revert exception, if any."""
    if isinstance(exc, ContractLogicError):
        msg = exc.message or str(exc)
    else:
        msg = str(exc)
        if "revert" not in msg:
            return None
    prefix = "execution reverted: "
    return msg[len(prefix):] if msg.startswith(prefix) else msg


def load_or_create_account(path: str | os.PathLike) -> LocalAccount:
    """The node's ledger account: a private key kept in a 0600 file.

    Created (with a fresh random key) on first use; the parent directory is
    created 0700 if missing. An existing file readable by others is tightened.
    """
    path = Path(path)
    if path.exists():
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        key = path.read_text(encoding="ascii").strip()
        return Account.from_key(key)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    account = Account.create()
    atomic_write(path, (account.key.hex() + "\n").encode("ascii"), mode=0o600)
    return account


class TransportProvider(JSONBaseProvider):
    """A web3 provider over any bytes-in/bytes-out JSON-RPC transport.

    For example a joining SN reaching the sentinel's embedded chain through the
    SN API (``transport`` sends the request and returns the response bytes), or
    in-process: ``TransportProvider(chain.handle_json_rpc)``.
    """

    def __init__(self, transport: Callable[[bytes], bytes], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._transport = transport

    def make_request(self, method, params):
        return self.decode_rpc_response(self._transport(self.encode_rpc_request(method, params)))


# ---------------------------------------------------------------- sending

class _TxSender:
    """Signs and sends one account's transactions on one chain.

    Holds the account's next nonce and cached fee parameters; its lock makes
    concurrent senders in one process (LedgerClient threads, fund()) draw
    distinct nonces. One per (Web3 object, address), see ``_sender``.
    """

    def __init__(self, chain_id: int):
        self.chain_id = chain_id
        self.lock = threading.Lock()
        self.nonce: int | None = None
        self.fees: tuple[int, int] | None = None
        self.fees_at = 0.0

    def _fees(self, w3: Web3) -> tuple[int, int]:
        now = time.monotonic()
        if self.fees is None or now - self.fees_at > FEE_REFRESH_S:
            try:
                tip = int(w3.eth.max_priority_fee)
            except Exception:  # chains without eth_maxPriorityFeePerGas
                tip = 0
            gas_price = int(w3.eth.gas_price)
            # Twice the current price leaves room for the base fee to rise
            # between refreshes; only the used part is ever paid.
            self.fees = (2 * gas_price + tip, tip)
            self.fees_at = now
        return self.fees

    def send(self, w3: Web3, account: LocalAccount, fields: dict) -> bytes:
        with self.lock:
            try:
                if self.nonce is None:
                    self.nonce = w3.eth.get_transaction_count(account.address, "pending")
                max_fee, tip = self._fees(w3)
                tx = {
                    "type": 2,
                    "chainId": self.chain_id,
                    "nonce": self.nonce,
                    "maxFeePerGas": max_fee,
                    "maxPriorityFeePerGas": tip,
                    "value": 0,
                    **fields,
                }
                raw = account.sign_transaction(tx).raw_transaction
                tx_hash = bytes(w3.eth.send_raw_transaction(raw))
            except BaseException:
                # The node may hold a different view (nonce used elsewhere,
                # fees moved): resynchronise on the next send.
                self.nonce = None
                self.fees = None
                raise
            self.nonce += 1
            return tx_hash


class _ChainState:
    """Per-Web3 cache: the chain id and one _TxSender per account."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.chain_id: int | None = None
        self.senders: dict[str, _TxSender] = {}


# Keyed by the Web3 object (weakly): LedgerClients and fund() sharing a Web3
# share nonce trackers. Two Web3 objects on one chain signing with one account
# would each track a nonce; a collision then costs one LedgerError and a resync.
_chains: "weakref.WeakKeyDictionary[Web3, _ChainState]" = weakref.WeakKeyDictionary()
_chains_lock = threading.Lock()


def _sender(w3: Web3, address: str) -> _TxSender:
    with _chains_lock:
        state = _chains.get(w3)
        if state is None:
            state = _chains[w3] = _ChainState()
    with state.lock:
        if state.chain_id is None:
            state.chain_id = int(w3.eth.chain_id)
        if address not in state.senders:
            state.senders[address] = _TxSender(state.chain_id)
        return state.senders[address]


def _wait_receipt(w3: Web3, tx_hash: bytes, timeout: float = RECEIPT_TIMEOUT_S):
    """Poll for the receipt: immediately first (auto-mining chains), then back off."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            receipt = w3.eth.get_transaction_receipt(tx_hash)
            if receipt is not None:
                return receipt
        except TransactionNotFound:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no receipt for 0x{tx_hash.hex()} after {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


def _send_and_wait(w3: Web3, account: LocalAccount, fields: dict, function: str):
    try:
        tx_hash = _sender(w3, account.address).send(w3, account, fields)
    except (Web3Exception, ValueError, OSError) as exc:
        raise LedgerError(function, f"could not send transaction: {exc}") from exc
    try:
        return tx_hash, _wait_receipt(w3, tx_hash)
    except (Web3Exception, OSError) as exc:  # TimeoutError is an OSError
        # The transaction may still be mined: the hash lets the caller check.
        raise LedgerError(function, f"sent 0x{tx_hash.hex()} but got no receipt: {exc}", tx_hash) from exc


def fund(w3: Web3, from_account: LocalAccount, to_address: str, wei: int) -> bytes:
    """Send ``wei`` from ``from_account`` (e.g. the sentinel) to a joining SN account.

    Returns the transaction hash once mined; raises LedgerError if it failed.
    Shares the nonce tracker with any LedgerClient of the same account.
    """
    fields = {"to": to_checksum_address(to_address), "value": int(wei), "gas": 21_000}
    tx_hash, receipt = _send_and_wait(w3, from_account, fields, "fund")
    if receipt["status"] != 1:
        raise LedgerError("fund", "transfer failed", tx_hash)
    return tx_hash


def deploy_ledger(w3: Web3, account: LocalAccount, sentinel_node_id: str,
                  fingerprint: bytes | str, endpoint: str) -> str:
    """Deploy SwarmLedger with ``account`` as the sentinel SN; returns the address."""
    art = load_artifact()
    factory = w3.eth.contract(abi=art["abi"], bytecode=art["bytecode"])
    data = factory.constructor(sentinel_node_id, _bytes32(fingerprint, "fingerprint"), endpoint).data_in_transaction
    gas = _gas("deploy", strings=(sentinel_node_id, endpoint))
    tx_hash, receipt = _send_and_wait(w3, account, {"data": data, "gas": gas}, "deploy")
    if receipt["status"] != 1 or not receipt["contractAddress"]:
        reason = "reverted"
        if receipt["gasUsed"] >= gas:
            reason = f"out of gas (limit {gas})"
        raise LedgerError("deploy", reason, tx_hash)
    return to_checksum_address(receipt["contractAddress"])


# Gas limits per function: measured worst cases (tests/ledger check them at the
# bounds) plus ~25% headroom, so no eth_estimateGas round trip is needed. The
# limit only caps a transaction; the sender pays for the gas actually used.
_GAS_BASE = {
    "deploy": 4_000_000,
    "registerSN": 330_000,
    "registerNode": 320_000,
    "setStatus": 60_000,
    "revoke": 110_000,
    "configure": 150_000,
    "checkIn": 110_000,
    "seal": 170_000,
    "submitReceipts": 120_000,
    "freezeReceipts": 60_000,
    "checkInAndSeal": 200_000,
    "commitMerged": 110_000,
    "markFinished": 110_000,
}
_GAS_PER_ID = {"checkIn": 75_000, "seal": 38_000, "checkInAndSeal": 104_000,
               "submitReceipts": 1_500, "commitMerged": 45_000}
_GAS_PER_WORD = 30_000  # one fresh storage word of string data, plus its log bytes


def _gas(function: str, ids: int = 0, strings: Iterable[str] = ()) -> int:
    words = sum((len(s.encode("utf-8")) + 31) // 32 for s in strings)
    return _GAS_BASE[function] + _GAS_PER_ID.get(function, 0) * ids + _GAS_PER_WORD * words


# ---------------------------------------------------------------- client

class LedgerClient:
    """One SN account's typed view of a deployed SwarmLedger.

    Transactions return a TxResult or raise LedgerError("<function>: <reason>");
    views return frozen dataclasses. Node arguments accept a node id string
    ("site/sl-1") or its 32-byte key (``node_key``). Thread-safe.
    """

    def __init__(self, w3: Web3, contract_address: str, account: LocalAccount):
        self.w3 = w3
        self.account = account
        self.address = to_checksum_address(contract_address)
        self._contract = w3.eth.contract(address=self.address, abi=load_artifact()["abi"])
        self._events_by_topic = event_topics(self._contract)
        self._block_gas_limit: int | None = None

    # -- transactions ----------------------------------------------------

    def _transact(self, function: str, args: list, gas: int) -> TxResult:
        data = self._contract.encode_abi(function, args=args)
        if self._block_gas_limit is None:
            self._block_gas_limit = int(self.w3.eth.get_block("latest")["gasLimit"])
        gas = min(gas, self._block_gas_limit)
        fields = {"to": self.address, "data": data, "gas": gas}
        tx_hash, receipt = _send_and_wait(self.w3, self.account, fields, function)
        if receipt["status"] != 1:
            raise LedgerError(function, self._failure_reason(fields, receipt), tx_hash)
        events = tuple(self._decode(log) for log in receipt["logs"] if self._known(log))
        return TxResult(tx_hash, int(receipt["blockNumber"]), int(receipt["gasUsed"]), events)

    def _failure_reason(self, fields: dict, receipt) -> str:
        if int(receipt["gasUsed"]) >= int(fields["gas"]):
            return f"out of gas (limit {fields['gas']})"
        # Replay against the state the transaction saw to learn the reason.
        call = {"from": self.account.address, "to": fields["to"], "data": fields["data"], "gas": fields["gas"]}
        try:
            self.w3.eth.call(call, int(receipt["blockNumber"]) - 1)
        except Exception as exc:  # noqa: BLE001 - any revert shape is a reason
            reason = _revert_reason(exc)
            if reason:
                return reason
        return "reverted"

    def register_sn(self, node_id: str, fingerprint: bytes | str, endpoint: str, account: str) -> TxResult:
        """Admit an SN node signing with ``account`` (caller: an active SN)."""
        _text(node_id, MAX_NODE_ID_BYTES, "node id")
        _text(endpoint, MAX_ENDPOINT_BYTES, "endpoint")
        return self._transact("registerSN", [node_id, _bytes32(fingerprint, "fingerprint"), endpoint,
                                             to_checksum_address(account)],
                              _gas("registerSN", strings=(node_id, endpoint)))

    def register_node(self, node_id: str, role: int | str, fingerprint: bytes | str, endpoint: str) -> TxResult:
        """Register or re-register an SL/swci node; this account becomes its controller."""
        if isinstance(role, str):
            roles = {v: k for k, v in ROLE_NAMES.items()}
            if role not in roles:
                raise ValueError(f"unknown role {role!r}; expected one of {sorted(roles)}")
            role = roles[role]
        _text(node_id, MAX_NODE_ID_BYTES, "node id")
        _text(endpoint, MAX_ENDPOINT_BYTES, "endpoint")
        return self._transact("registerNode", [node_id, role, _bytes32(fingerprint, "fingerprint"), endpoint],
                              _gas("registerNode", strings=(node_id, endpoint)))

    def set_status(self, node: bytes | str, status: int) -> TxResult:
        return self._transact("setStatus", [_key(node), status], _gas("setStatus"))

    def revoke(self, fingerprint: bytes | str, reason: str) -> TxResult:
        return self._transact("revoke", [_bytes32(fingerprint, "fingerprint"),
                                         _text(reason, MAX_REASON_BYTES, "reason")],
                              _gas("revoke", strings=(reason,)))

    def configure(self, min_peers: int, config: Mapping | str = "") -> TxResult:
        """Fix the session configuration (once per ledger)."""
        text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, separators=(",", ":"))
        return self._transact("configure", [min_peers, _text(text, MAX_CONFIG_BYTES, "config JSON")],
                              _gas("configure", strings=(text,)))

    @staticmethod
    def _checkin_args(ids, weights, digests) -> list:
        ids = _ids(ids)
        if not (len(ids) == len(weights) == len(digests)):
            raise ValueError("ids, weights and digests must have the same length")
        return [ids, [int(w) for w in weights], [_bytes32(d, "digest") for d in digests]]

    def check_in(self, round: int, ids: Sequence[bytes | str], weights: Sequence[int],
                 digests: Sequence[bytes | str]) -> TxResult:
        """Check in this SN's nodes for ``round`` in one transaction."""
        args = self._checkin_args(ids, weights, digests)
        return self._transact("checkIn", [round, *args], _gas("checkIn", ids=len(ids)))

    def seal(self, round: int, ids: Sequence[bytes | str]) -> TxResult:
        """Seal ``round`` with this participant set (all must have checked in)."""
        return self._transact("seal", [round, _ids(ids)], _gas("seal", ids=len(ids)))

    def check_in_and_seal(self, round: int, ids: Sequence[bytes | str], weights: Sequence[int],
                          digests: Sequence[bytes | str], seal_ids: Sequence[bytes | str] | None = None) -> TxResult:
        """Single-SN fast path: check in and seal a round in ONE transaction.

        ``seal_ids`` defaults to ``ids`` (it may also include ids checked in earlier).
        """
        args = self._checkin_args(ids, weights, digests)
        sealed = args[0] if seal_ids is None else _ids(seal_ids)
        n = max(len(args[0]), len(sealed))
        return self._transact("checkInAndSeal", [round, *args, sealed], _gas("checkInAndSeal", ids=n))

    def commit_merged(self, round: int, node: bytes | str, digest: bytes | str) -> TxResult:
        """Commit one participant's merged digest (see commit_merged_batch)."""
        return self.commit_merged_batch(round, [node], [digest])

    def commit_merged_batch(self, round: int, nodes: Sequence[bytes | str],
                            digests: Sequence[bytes | str]) -> TxResult:
        """Commit participants' merged digests in one transaction: each participant's first
        commit is a vote; the result's MergeAgreed / MergeFailed / MergeMismatch events
        say what it decided (``merge_status`` reads the state)."""
        if len(nodes) != len(digests):
            raise ValueError("nodes and digests differ in length")
        return self._transact("commitMerged", [round, _ids(nodes),
                                               [_bytes32(d, "digest") for d in digests]],
                              _gas("commitMerged", len(nodes)))

    def submit_receipts(self, round: int, phase: int, node: bytes | str, bits: bytes,
                        remaining_s: float = 0.0) -> TxResult:
        """Record a participant's receipt bitmap (one byte of 0 or 1 per participant) for
        (round, phase); the first per node counts. ``.named("ReceiptsFrozen")`` on the
        result: this one completed the set."""
        if len(bits) > MAX_PARTICIPANTS:
            raise ValueError(f"a bitmap has at most {MAX_PARTICIPANTS} bytes, got {len(bits)}")
        return self._transact("submitReceipts", [round, phase, _key(node), bytes(bits),
                                                 max(0, int(remaining_s + 0.999))],
                              _gas("submitReceipts", ids=len(bits)))

    def freeze_receipts(self, round: int, phase: int) -> TxResult:
        """Freeze (round, phase)'s receipts after the grace (reverts while still open)."""
        return self._transact("freezeReceipts", [round, phase], _gas("freezeReceipts"))

    def mark_finished(self, node: bytes | str) -> TxResult:
        return self._transact("markFinished", [_key(node)], _gas("markFinished"))

    # -- views -----------------------------------------------------------

    def _call(self, function: str, *args):
        try:
            return getattr(self._contract.functions, function)(*args).call()
        except ContractLogicError as exc:
            raise LedgerError(function, _revert_reason(exc) or "reverted") from exc

    def member(self, node: bytes | str) -> Member | None:
        """The member with this node id or key, or None if never registered."""
        key = _key(node)
        m = self._call("getMember", key)
        if m[1] == 0:
            return None
        return Member(key, m[0], m[1], bytes(m[2]), m[3], m[4], m[5], to_checksum_address(m[6]))

    def member_count(self) -> int:
        return self._call("memberCount")

    def member_id_at(self, index: int) -> bytes:
        return bytes(self._call("memberIdAt", index))

    def members(self) -> list[Member]:
        """All members in registration order."""
        return [self.member(self.member_id_at(i)) for i in range(self.member_count())]

    def is_revoked(self, fingerprint: bytes | str) -> bool:
        return self._call("isRevoked", _bytes32(fingerprint, "fingerprint"))

    def member_id_of_account(self, account: str) -> bytes | None:
        """The SN member id an account signs for, if any."""
        return _opt32(self._call("snIdOf", to_checksum_address(account)))

    def sentinel(self) -> str:
        return to_checksum_address(self._call("sentinel"))

    def config(self) -> SessionConfig:
        configured, min_peers, text = self._call("getConfig")
        return SessionConfig(configured, min_peers, text)

    def last_sealed_round(self) -> int:
        return self._call("lastSealedRound")

    def round_info(self, round: int) -> RoundInfo:
        """A round from the contract; a sealed one's lists from its RoundSealed event, checked
        against the hash the contract keeps. Raises LedgerError if that block is gone (an
        embedded chain prunes old blocks: their events are in its chain-archive.jsonl)."""
        sealed, record, merged, sealed_at, sealed_block, count = self._call("roundInfo", round)
        if not sealed:
            return RoundInfo(round, False, (), (), (), _opt32(merged), 0, None, count)
        try:
            events, _ = self.events_since(sealed_block, sealed_block)
        except Exception as exc:  # noqa: BLE001 - a pruned block fails differently per chain
            events, error = [], exc
        else:
            error = None
        for event in events:
            if event.name == "RoundSealed" and event.args["round"] == round:
                ids, weights, digests = event.args["participants"], event.args["weights"], event.args["digests"]
                if keccak(abi_encode(["bytes32[]", "uint32[]", "bytes32[]"], [ids, weights, digests])) \
                        != bytes(record):
                    raise LedgerError("roundInfo", f"round {round}: RoundSealed event does not match "
                                                   "the contract's record")
                return RoundInfo(round, True, ids, weights, digests, _opt32(merged), sealed_at,
                                 _opt32(event.args["by"]), count)
        raise LedgerError("roundInfo", f"round {round} was sealed in block {sealed_block}, which this "
                                       f"node no longer serves{f' ({error})' if error else ''}")

    def merged_digest(self, round: int) -> bytes | None:
        """A round's agreed merged digest, None while none has a majority (one contract call)."""
        return _opt32(self._call("roundInfo", round)[2])

    def merge_status(self, round: int) -> MergeState:
        """Where a round's merged digest stands (one contract call)."""
        status, digest, votes, top, size = self._call("mergeStatus", round)
        return MergeState(round, MergeStatus(status), _opt32(digest), votes, top, size)

    def votes_for(self, round: int, digest: bytes | str) -> int:
        """Votes for a digest of a round that is not (yet) its agreed one."""
        return self._call("votesFor", round, _bytes32(digest, "digest"))

    def check_in_of(self, round: int, node: bytes | str) -> tuple[int, bytes, bool] | None:
        """(weight, digest, sealed as participant) of a check-in, or None."""
        weight, digest, participant = self._call("checkInOf", round, _key(node))
        return None if bytes(digest) == ZERO32 else (weight, bytes(digest), participant)

    def finished_count(self) -> int:
        return self._call("finishedCount")

    def is_finished(self, node: bytes | str) -> bool:
        return self._call("isFinished", _key(node))

    # -- events ----------------------------------------------------------

    def _known(self, log) -> bool:
        return decode_event(self._events_by_topic, self.address, log) is not None

    def _decode(self, log) -> LedgerEvent:
        return decode_event(self._events_by_topic, self.address, log)

    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    def events_since(self, from_block: int, to_block: int | None = None,
                     max_range: int = 5_000) -> tuple[list[LedgerEvent], int]:
        """Decoded ledger events in blocks ``from_block..to_block`` (default: latest).

        Returns ``(events, next_block)``; poll again with ``next_block``. Ranges
        are fetched in chunks of ``max_range`` blocks, which public nodes require.
        """
        last = self.block_number() if to_block is None else int(to_block)
        events: list[LedgerEvent] = []
        start = max(0, int(from_block))
        while start <= last:
            end = min(last, start + max_range - 1)
            logs = self.w3.eth.get_logs({"address": self.address, "fromBlock": start, "toBlock": end})
            events.extend(self._decode(log) for log in logs if self._known(log))
            start = end + 1
        return events, max(int(from_block), last + 1)
