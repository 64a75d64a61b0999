"""The sentinel's embedded chain: eth-tester/py-evm in process, durable on disk.

eth-tester keeps its whole chain in an in-memory key-value store. Here that
store journals every write to ``<data_dir>/chain.journal`` and, after each
request that changed anything (in practice: each mined block, since
eth-tester mines one block per transaction), appends a commit marker and
fsyncs. A transaction whose receipt a caller has seen is therefore on disk,
and a SIGKILL at any moment loses at most the block being written: on the
next start the journal is replayed up to its last commit marker and a torn
tail is cut off.

The journal stays bounded on a long run: once it has grown to ``compact_ratio``
times its last snapshot (and at least ``compact_min_bytes``), the chain is
pruned and the journal replaced by one snapshot of what is left, atomically
(written beside it, fsync'd, renamed). Pruning keeps the genesis block, the
last ``keep_blocks`` blocks (headers, transactions, receipts: what
``eth_getLogs``, receipts and BLOCKHASH need) and the state of the last
``keep_states`` blocks (trie nodes reachable from their state roots); every
other trie node and block is garbage that py-evm never deletes. Before a block
is pruned its logs are appended to ``chain-archive.jsonl`` (one JSON line per
block: number, hash, timestamp, raw logs), so the audit trail of events stays
on disk, outside the state that is replayed and held in memory. The contract's
own storage (members, per-round records) is never pruned.

Journal format: an 8-byte magic, then records
``op:u8 | key_len:u32 | value_len:u32 | key | value | crc32:u32`` (big
endian, crc over everything before it) with op 1 = set, 2 = delete,
3 = commit (value = commit sequence number).

Also here: ``handle_json_rpc`` (raw JSON-RPC for remote SN nodes, restricted to
read methods and ``eth_sendRawTransaction``), ``open_or_deploy`` (find the
sentinel's contract again after a restart) and ``connect_external`` for
``--ledger-url`` chains.
"""
from __future__ import annotations

import fcntl
import json
import logging
import os
import struct
import threading
import zlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from eth.db.atomic import AtomicDB
from eth.db.backends.memory import MemoryDB
from eth.db.schema import SchemaV1
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
import rlp
from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.eth_tester import EthereumTesterProvider

from swarm.files import atomic_write

from .client import LedgerClient, LedgerError, deploy_ledger, fund, load_artifact, load_or_create_account

log = logging.getLogger(__name__)

JOURNAL_NAME = "chain.journal"
ARCHIVE_NAME = "chain-archive.jsonl"
LOCK_NAME = "chain.lock"
LEDGER_META_NAME = "ledger.json"
LEDGER_KEY_NAME = "ledger.key"
DEFAULT_FUND_WEI = 100 * 10**18

#: anvil's (and hardhat's) well-known first dev key, from the public "test test ... junk"
#: mnemonic: used for the sentinel only on a dev chain (chain id 31337) when no key is given.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_CHAIN_ID = 31337

#: Blocks kept whole (headers, transactions, receipts, logs) and blocks whose state is kept.
KEEP_BLOCKS = 1024
KEEP_STATES = 16
MIN_KEEP_BLOCKS = 257  # BLOCKHASH and py-evm's ancestor lookups reach 256 blocks back

_MAGIC = b"SWJRNL01"
_HEAD = struct.Struct(">BII")
_CRC = struct.Struct(">I")
_OP_SET, _OP_DEL, _OP_COMMIT = 1, 2, 3

#: JSON-RPC methods served to remote SN nodes: reads, plus signed transactions.
#: Never eth_sendTransaction / eth_sign* / personal_* / evm_* / testing_* /
#: eth_accounts (dev keys are public knowledge) nor filters (server-side state).
READ_METHODS = frozenset({
    "web3_clientVersion", "net_version", "net_listening", "net_peerCount",
    "eth_chainId", "eth_syncing", "eth_blockNumber", "eth_gasPrice", "eth_maxPriorityFeePerGas",
    "eth_feeHistory", "eth_blobBaseFee", "eth_getBalance", "eth_getCode", "eth_getStorageAt",
    "eth_getTransactionCount", "eth_getBlockByNumber", "eth_getBlockByHash",
    "eth_getBlockTransactionCountByNumber", "eth_getBlockTransactionCountByHash",
    "eth_getTransactionByHash", "eth_getTransactionByBlockHashAndIndex",
    "eth_getTransactionByBlockNumberAndIndex", "eth_getTransactionReceipt",
    "eth_call", "eth_estimateGas", "eth_getLogs",
})
WRITE_METHODS = frozenset({"eth_sendRawTransaction"})
ALLOWED_METHODS = READ_METHODS | WRITE_METHODS
MAX_BATCH = 100


# ---------------------------------------------------------------- journal

def _record(op: int, key: bytes, value: bytes) -> bytes:
    body = _HEAD.pack(op, len(key), len(value)) + key + value
    return body + _CRC.pack(zlib.crc32(body))


def _replay(data: bytes) -> tuple[dict[bytes, bytes], int, int, int]:
    """Apply a journal image: returns (store, end of last commit, commit count, end of the
    first commit), the first commit being the snapshot the journal started from."""
    store: dict[bytes, bytes] = {}
    pending: list[tuple[bytes, bytes | None]] = []
    pos = committed_end = first_end = len(_MAGIC)
    commits = 0
    size = len(data)
    view = memoryview(data)
    while pos + _HEAD.size <= size:
        op, klen, vlen = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + klen + vlen + _CRC.size
        if op not in (_OP_SET, _OP_DEL, _OP_COMMIT) or end > size:
            break
        if zlib.crc32(view[pos:end - _CRC.size]) != _CRC.unpack_from(data, end - _CRC.size)[0]:
            break
        kstart = pos + _HEAD.size
        if op == _OP_COMMIT:
            for key, value in pending:
                if value is None:
                    store.pop(key, None)
                else:
                    store[key] = value
            pending.clear()
            committed_end = end
            commits += 1
            if commits == 1:
                first_end = end
        else:
            key = bytes(view[kstart:kstart + klen])
            pending.append((key, bytes(view[kstart + klen:kstart + klen + vlen]) if op == _OP_SET else None))
        pos = end
    return store, committed_end, commits, first_end


def _write_snapshot(path: Path, store: Mapping[bytes, bytes], seq: int = 0) -> int:
    """Atomically replace the journal with one commit holding ``store``; returns its size."""
    image = b"".join((_MAGIC, *(_record(_OP_SET, k, v) for k, v in store.items()),
                      _record(_OP_COMMIT, b"", seq.to_bytes(8, "big"))))
    atomic_write(path, image)
    return len(image)


# ---------------------------------------------------------------- pruning

_BLANK = (b"", b"\x80")
#: Lookup keys that belong to one block (by number, header hash or transaction hash): pruned with it.
_BLOCK_KEY_PREFIXES = (b"block-number-to-hash:", b"block-hash-to-score:", b"transaction-hash-to-block:")


def _walk_trie(store: Mapping[bytes, bytes], root: bytes, live: set[bytes],
               on_leaf: Callable[[bytes], None] | None = None) -> None:
    """Adds every stored node of the trie at ``root`` to ``live``; calls ``on_leaf`` on values.

    Subtries already in ``live`` are skipped: walking many state roots that share
    most nodes costs about one walk plus the differences.
    """
    stack: list[Any] = [root]
    while stack:
        ref = stack.pop()
        if isinstance(ref, bytes):
            if len(ref) != 32 or ref in live:
                continue
            encoded = store.get(ref)
            if encoded is None:
                continue
            live.add(ref)
            node = rlp.decode(encoded)
        else:
            node = ref  # a node under 32 bytes is embedded in its parent
        if len(node) == 17:
            stack.extend(child for child in node[:16] if child not in _BLANK)
            if node[16] and on_leaf is not None:
                on_leaf(node[16])
        elif len(node) == 2 and node[0]:
            if node[0][0] >> 4 >= 2:  # leaf (hex-prefix flag 2 or 3)
                if on_leaf is not None:
                    on_leaf(node[1])
            else:
                stack.append(node[1])


def _live_keys(chain, store: Mapping[bytes, bytes], keep_blocks: int,
               keep_states: int) -> tuple[set[bytes], list[int]]:
    """The keys a pruned store keeps, and the block numbers it drops."""
    db = chain.chaindb
    head = chain.get_canonical_head().block_number
    floor = max(1, head - keep_blocks + 1)
    live: set[bytes] = set()
    dropped = [n for n in range(1, floor) if SchemaV1.make_block_number_to_hash_lookup_key(n) in store]

    def account(value: bytes) -> None:
        _nonce, _balance, storage_root, code_hash = rlp.decode(value)
        _walk_trie(store, storage_root, live)
        if code_hash in store:
            live.add(code_hash)

    for number in (0, *range(floor, head + 1)):
        header = db.get_canonical_block_header_by_number(number)
        live.add(header.hash)
        live.add(header.uncles_hash)
        live.add(SchemaV1.make_block_hash_to_score_lookup_key(header.hash))
        live.add(SchemaV1.make_block_number_to_hash_lookup_key(number))
        _walk_trie(store, header.transaction_root, live,
                   lambda tx: live.add(SchemaV1.make_transaction_hash_to_block_lookup_key(keccak(tx))))
        _walk_trie(store, header.receipt_root, live)
        withdrawals_root = getattr(header, "withdrawals_root", None)
        if withdrawals_root is not None:
            _walk_trie(store, withdrawals_root, live)
        if number > head - keep_states:
            _walk_trie(store, header.state_root, live, account)
    return live, dropped


def _block_record(chain, number: int) -> dict:
    """A block's logs as one archive record (raw: decode them with the contract's ABI)."""
    block = chain.get_canonical_block_by_number(number)
    logs = []
    for tx, receipt in zip(block.transactions, block.get_receipts(chain.chaindb)):
        for entry in receipt.logs:
            logs.append({"tx": "0x" + tx.hash.hex(), "index": len(logs),
                         "address": to_checksum_address(entry.address),
                         "topics": ["0x" + t.to_bytes(32, "big").hex() for t in entry.topics],
                         "data": "0x" + bytes(entry.data).hex()})
    return {"block": number, "hash": "0x" + block.header.hash.hex(),
            "timestamp": block.header.timestamp, "logs": logs}


class _Archive:
    """``chain-archive.jsonl``: the logs of pruned blocks, appended and fsync'd before pruning."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.last_block = 0
        if not path.exists():
            return
        with open(path, "r+b") as fh:
            # Only the tail matters (the archive grows for ever; a block's line is a few KB).
            size = fh.seek(0, os.SEEK_END)
            base = max(0, size - (1 << 20))
            fh.seek(base)
            data = fh.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a torn last line (killed mid-append): the block is still in the journal
                fh.truncate(base + end)
            start = data.rfind(b"\n", 0, end - 1) + 1
            if end:
                self.last_block = int(json.loads(data[start:end])["block"])

    def append(self, records: list[dict]) -> None:
        records = [r for r in records if r["block"] > self.last_block]
        if not records:
            return
        with open(self.path, "ab") as fh:
            fh.write(b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records))
            fh.flush()
            os.fsync(fh.fileno())
        self.last_block = records[-1]["block"]


class _JournaledDB(MemoryDB):
    """py-evm's MemoryDB whose every change is appended to the chain journal.

    Changes accumulate in a buffer; ``commit()`` writes them with a commit
    marker and fsyncs. Callers serialise access (the provider's lock).
    """

    def __init__(self, store: dict[bytes, bytes], path: Path, seq: int) -> None:
        super().__init__(store)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._durable_size = os.fstat(self._fd).st_size
        self._buf = bytearray()
        self._seq = seq

    def __setitem__(self, key: bytes, value: bytes) -> None:
        # py-evm rewrites many unchanged trie nodes; skipping them keeps the journal small.
        if self.kv_store.get(key) == value:
            return
        self.kv_store[key] = value
        self._buf += _record(_OP_SET, key, value)

    def __delitem__(self, key: bytes) -> None:
        del self.kv_store[key]  # KeyError for a missing key, as MemoryDB does
        self._buf += _record(_OP_DEL, key, b"")

    def commit(self) -> bool:
        """Make all changes so far durable; False if there was nothing to write."""
        if not self._buf:
            return False
        if self._fd < 0:
            raise RuntimeError("embedded chain is closed: changes cannot be made durable")
        self._seq += 1
        self._buf += _record(_OP_COMMIT, b"", self._seq.to_bytes(8, "big"))
        try:
            data = bytes(self._buf)
            written = 0
            while written < len(data):
                written += os.write(self._fd, data[written:])
            os.fsync(self._fd)
        except OSError:
            # Never leave half a commit behind a later good one: replay stops at it.
            os.ftruncate(self._fd, self._durable_size)
            raise
        self._durable_size += len(self._buf)
        self._buf.clear()
        return True

    @property
    def durable_size(self) -> int:
        return self._durable_size

    def snapshot(self, path: Path, drop: list[bytes]) -> int:
        """Drops ``drop`` from the store and replaces the journal with a snapshot of the rest.

        Nothing may be pending. A crash before the rename leaves the old journal,
        which still replays to the same state (pruned keys are garbage).
        """
        if self._buf:
            raise RuntimeError("snapshot with uncommitted changes")
        for key in drop:
            del self.kv_store[key]
        size = _write_snapshot(path, self.kv_store, self._seq)
        os.close(self._fd)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._durable_size = size
        return size

    def close(self) -> None:
        if self._fd >= 0:
            self.commit()
            os.close(self._fd)
            self._fd = -1


# ---------------------------------------------------------------- provider

def _revert_response(message: str) -> dict:
    """A revert as a geth-style JSON-RPC error (code 3, Error(string) data)."""
    prefix = "execution reverted: "
    reason = message[len(prefix):] if message.startswith(prefix) else message
    data = "0x08c379a0" + abi_encode(["string"], [reason]).hex()
    return {"code": 3, "message": f"execution reverted: {reason}", "data": data}


class EmbeddedProvider(EthereumTesterProvider):
    """eth-tester behind one lock, made durable and made to fail like a real node.

    eth-tester is not thread-safe, so every request holds the chain's lock.
    After each request the journal is committed (a no-op for reads), before
    the response is returned. Reverts and rejected transactions come back as
    JSON-RPC errors, so web3 raises ContractLogicError / Web3RPCError exactly
    as it does against anvil or geth.
    """

    def __init__(self, tester, lock: threading.RLock, commit: Callable[[], Any]) -> None:
        super().__init__(tester)
        self._lock = lock
        self._commit = commit

    def make_request(self, method, params):
        from eth_tester.exceptions import TransactionFailed

        with self._lock:
            try:
                return super().make_request(method, params)
            except TransactionFailed as exc:
                return {"jsonrpc": "2.0", "id": 0, "error": _revert_response(str(exc))}
            except Exception as exc:  # noqa: BLE001 - a node answers bad input with an error
                return {"jsonrpc": "2.0", "id": 0,
                        "error": {"code": -32000, "message": f"{type(exc).__name__}: {exc}"}}
            finally:
                self._commit()


def _jsonable(value: Any, key: str | None = None) -> Any:
    """eth-tester results as standard JSON-RPC values (hex quantities and data)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        if key == "logsBloom":
            return "0x" + value.to_bytes(256, "big").hex()
        return hex(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {k: _jsonable(v, k) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _topics_match(wanted: list, topics: list[str]) -> bool:
    """JSON-RPC topic filter: position i is None (any), one topic, or a list of alternatives."""
    if len(wanted) > len(topics):
        return False
    for want, have in zip(wanted, topics):
        if want is None:
            continue
        options = [want] if isinstance(want, str) else want
        if have.lower() not in {o.lower() for o in options if o is not None}:
            return False
    return True


def _rpc_error(rid: Any, code: int, message: str) -> dict:
    return {"jsonrpc": "2.0", "id": rid, "error": {"code": code, "message": message}}


# ---------------------------------------------------------------- chain

class EmbeddedChain:
    """An in-process py-evm chain that survives kill -9 (see module docstring).

    Attributes: ``w3`` (a Web3 on ``provider``), ``provider`` (thread-safe),
    ``dev_accounts`` (eth-tester's ten funded accounts, as LocalAccounts: their
    keys are public, 1..10, so use them only to fund real keys), ``data_dir``,
    ``journal_path`` and ``load_info`` (what opening found).
    """

    def __init__(self, data_dir: str | os.PathLike, *, compact_ratio: float = 3.0,
                 compact_min_bytes: int = 8 << 20, keep_blocks: int = KEEP_BLOCKS,
                 keep_states: int = KEEP_STATES) -> None:
        if keep_blocks < MIN_KEEP_BLOCKS or not 1 <= keep_states <= keep_blocks:
            raise ValueError(f"keep_blocks must be >= {MIN_KEEP_BLOCKS} (BLOCKHASH reaches 256 back) "
                             f"and keep_states in 1..keep_blocks; got {keep_blocks}, {keep_states}")
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.data_dir / JOURNAL_NAME
        self._compact_ratio, self._compact_min_bytes = compact_ratio, compact_min_bytes
        self._keep_blocks, self._keep_states = keep_blocks, keep_states
        self.compactions = 0
        # Two writers would interleave journal records: one process per data dir.
        # The kernel drops the lock when its holder dies, even by SIGKILL.
        self._lock_fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise LedgerError("EmbeddedChain", f"{self.data_dir} is in use by another process") from None

        try:
            self._open(compact_ratio, compact_min_bytes, keep_blocks)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, compact_ratio: float, compact_min_bytes: int, keep_blocks: int) -> None:
        from eth_tester import EthereumTester, PyEVMBackend

        # A throwaway genesis chain provides the chain class, the dev keys and,
        # on a fresh start, the genesis database.
        backend = PyEVMBackend()
        chain_class = type(backend.chain)

        for stale in self.data_dir.glob(f".{JOURNAL_NAME}.*.tmp"):  # a snapshot cut short by a kill
            stale.unlink()
        store: dict[bytes, bytes] = {}
        size = committed = commits = snapshot = 0
        if self.journal_path.exists():
            data = self.journal_path.read_bytes()
            size = len(data)
            if data[:len(_MAGIC)] == _MAGIC:
                store, committed, commits, snapshot = _replay(data)
            elif size >= len(_MAGIC):
                raise LedgerError("EmbeddedChain", f"{self.journal_path} is not a chain journal")
            del data
        compact = False
        if commits == 0:
            # Fresh start (or killed before the genesis commit): persist genesis.
            store = dict(backend.chain.chaindb.db.wrapped_db.kv_store)
            _write_snapshot(self.journal_path, store)
            action = "created"
        else:
            # Killed before it could compact (or never compacted): do it now, once the chain is up.
            if committed > max(compact_min_bytes, compact_ratio * snapshot):
                compact = True
                action = "compacted"
            if committed < size:
                # Cut a torn tail (kill -9 mid-commit) so new records follow a good one.
                with open(self.journal_path, "r+b") as fh:
                    fh.truncate(committed)
                    fh.flush()
                    os.fsync(fh.fileno())
                action = "truncated"
            elif not compact:
                action = "replayed"
        self.load_info = {"action": action, "commits": commits, "dropped_bytes": max(0, size - committed)
                          if commits else 0, "keys": len(store)}
        if action == "truncated":
            log.warning("chain journal: dropped a torn tail of %d bytes", size - committed)

        self._db = _JournaledDB(store, self.journal_path, commits)
        self._chain = backend.chain = chain_class(AtomicDB(self._db))
        self._archive = _Archive(self.data_dir / ARCHIVE_NAME)
        self.tester = EthereumTester(backend)
        self._lock = threading.RLock()
        self._compact_at = max(compact_min_bytes, compact_ratio * (snapshot or self._db.durable_size))
        if compact:
            self.compact()
        self.provider = EmbeddedProvider(self.tester, self._lock, self._after_request)
        self.w3 = Web3(self.provider)
        # A second provider object on the same tester for raw JSON-RPC serving,
        # so its middleware-free request function is cached separately.
        self._rpc_provider = EmbeddedProvider(self.tester, self._lock, self._after_request)
        rpc_w3 = Web3(self._rpc_provider, middleware=[])
        self._rpc = self._rpc_provider.request_func(rpc_w3, rpc_w3.middleware_onion)
        self.dev_accounts: list[LocalAccount] = [Account.from_key(k.to_bytes()) for k in backend.account_keys]

    def block_records(self, start: int, end: int) -> list[dict]:
        """Blocks ``start..end`` as archive records (their raw logs), read straight from the chain.

        eth-tester's ``eth_getLogs`` finds every receipt by scanning back from the head, so
        reading a whole history through it costs blocks^2 block reads (minutes for a few
        hundred rounds); this reads each block once.
        """
        with self._lock:
            return [_block_record(self._chain, n) for n in range(start, end + 1)]

    # -- durability and compaction ------------------------------------------

    def _after_request(self) -> None:
        """Commit what the request changed; compact once the journal has outgrown its snapshot."""
        if self._db.commit() and self._db.durable_size > self._compact_at:
            try:
                self.compact()
            except OSError as error:  # the journal is intact; try again after more growth
                log.warning("chain journal compaction failed: %s", error)
                self._compact_at = self._db.durable_size * self._compact_ratio

    def compact(self) -> dict:
        """Prune old blocks and dead state, archive the pruned blocks' logs, snapshot the journal.

        Returns what it did: blocks pruned, keys dropped, journal bytes before and after.
        """
        with self._lock:
            store = self._db.kv_store
            before = self._db.durable_size
            live, pruned_blocks = _live_keys(self._chain, store, self._keep_blocks, self._keep_states)
            drop = [k for k in store if k not in live and (len(k) == 32 or k.startswith(_BLOCK_KEY_PREFIXES))]
            self._archive.append([_block_record(self._chain, n) for n in pruned_blocks
                                  if n > self._archive.last_block])
            size = self._db.snapshot(self.journal_path, drop)
            self._compact_at = max(self._compact_min_bytes, self._compact_ratio * size)
            self.compactions += 1
            info = {"pruned_blocks": len(pruned_blocks), "dropped_keys": len(drop), "journal_before": before,
                    "journal_after": size, "keys": len(store)}
            log.info("chain journal compacted: %s", info)
            return info

    # -- lifecycle ---------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1

    def __enter__(self) -> "EmbeddedChain":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def block_number(self) -> int:
        return int(self.w3.eth.block_number)

    # -- raw JSON-RPC ------------------------------------------------------

    def handle_json_rpc(self, request: bytes) -> bytes:
        """Answer a JSON-RPC request (or batch) from a remote SN node.

        Only ``READ_METHODS`` and ``eth_sendRawTransaction`` are served; any
        other method gets error -32601 naming it. Never raises.
        """
        try:
            payload = json.loads(request)
        except (ValueError, UnicodeDecodeError):
            return json.dumps(_rpc_error(None, -32700, "parse error: request is not JSON")).encode()
        if isinstance(payload, list):
            if not payload or len(payload) > MAX_BATCH:
                out: Any = _rpc_error(None, -32600, f"batch must hold 1..{MAX_BATCH} requests")
            else:
                out = [self._handle_one(item) for item in payload]
        else:
            out = self._handle_one(payload)
        return json.dumps(out, separators=(",", ":")).encode()

    def _get_logs(self, params: list) -> list[dict] | None:
        """``eth_getLogs`` by reading each block of the range once (None: leave it to eth-tester).

        eth-tester finds each receipt by scanning back from the head, so one eth_getLogs
        costs (head - from) block reads per transaction: minutes, under the chain's lock,
        for a few hundred rounds, and every SN's transaction waits behind it. The lock is
        taken per block so a long range does not stall the swarm either.
        """
        if len(params) != 1 or not isinstance(params[0], dict) or "blockHash" in params[0]:
            return None
        query = params[0]
        with self._lock:
            head = self._chain.get_canonical_head().block_number

        def number(tag: Any) -> int:
            if tag is None or tag in ("latest", "pending", "safe", "finalized"):
                return head
            if tag == "earliest":
                return 0
            return int(tag, 16) if isinstance(tag, str) else int(tag)

        start, end = number(query.get("fromBlock")), min(number(query.get("toBlock")), head)
        if start < 0:
            raise ValueError(f"fromBlock {start} is negative")
        address = query.get("address")
        addresses = None if address is None else {
            a.lower() for a in ([address] if isinstance(address, str) else address)}
        topics = query.get("topics") or []
        out: list[dict] = []
        for n in range(start, end + 1):
            with self._lock:
                block = self._chain.get_canonical_block_by_number(n)
                receipts = block.get_receipts(self._chain.chaindb)
            index = 0
            for tx_index, (tx, receipt) in enumerate(zip(block.transactions, receipts)):
                for entry in receipt.logs:
                    log_index, index = index, index + 1
                    entry_address = to_checksum_address(entry.address)
                    entry_topics = ["0x" + t.to_bytes(32, "big").hex() for t in entry.topics]
                    if addresses is not None and entry_address.lower() not in addresses:
                        continue
                    if not _topics_match(topics, entry_topics):
                        continue
                    out.append({"address": entry_address, "topics": entry_topics,
                                "data": "0x" + bytes(entry.data).hex(), "blockNumber": hex(n),
                                "blockHash": "0x" + block.header.hash.hex(),
                                "transactionHash": "0x" + tx.hash.hex(),
                                "transactionIndex": hex(tx_index), "logIndex": hex(log_index),
                                "removed": False})
        return out

    def _handle_one(self, req: Any) -> dict:
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return _rpc_error(req.get("id") if isinstance(req, dict) else None, -32600, "invalid request")
        rid, method, params = req.get("id"), req["method"], req.get("params", [])
        if method not in ALLOWED_METHODS:
            return _rpc_error(rid, -32601, f"method {method!r} is not allowed on this ledger endpoint "
                                           "(read-only methods and eth_sendRawTransaction only)")
        if not isinstance(params, list):
            return _rpc_error(rid, -32602, f"{method}: params must be a list")
        if method == "eth_getLogs":
            try:
                logs = self._get_logs(params)
            except Exception as exc:  # noqa: BLE001 - bad params or pruned blocks: an error, not a crash
                return _rpc_error(rid, -32602, f"{method}: {type(exc).__name__}: {exc}")
            if logs is not None:
                return {"jsonrpc": "2.0", "id": rid, "result": logs}
        try:
            resp = self._rpc(method, params)
        except Exception as exc:  # noqa: BLE001 - bad params must not crash the SN
            return _rpc_error(rid, -32602, f"{method}: {type(exc).__name__}: {exc}")
        if "error" in resp:
            err = resp["error"]  # our own error dicts: already plain JSON (code stays an int)
            return {"jsonrpc": "2.0", "id": rid, "error": err if isinstance(err, dict) else {"code": -32000,
                                                                                             "message": str(err)}}
        return {"jsonrpc": "2.0", "id": rid, "result": _jsonable(resp.get("result"))}


# ---------------------------------------------------------------- ledger bootstrap

def open_or_deploy(w3: Web3, data_dir: str | os.PathLike, *, sentinel_node_id: str,
                   fingerprint: bytes | str, endpoint: str, account: LocalAccount | None = None,
                   funder: LocalAccount | None = None, fund_wei: int = DEFAULT_FUND_WEI) -> LedgerClient:
    """The sentinel's ledger: reopen the one recorded in ``data_dir/ledger.json`` or deploy it.

    ``account`` signs for the sentinel; by default the key in
    ``data_dir/ledger.key`` (created 0600 on first use). ``funder`` (e.g.
    ``chain.dev_accounts[0]`` on the embedded chain) tops that account up
    before deploying. A recorded ledger whose chain or contract is gone raises
    LedgerError instead of silently starting a new history.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    meta_path = data_dir / LEDGER_META_NAME
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.exists() else None
    if account is None:
        key_name = (meta or {}).get("account_key") or LEDGER_KEY_NAME
        account = load_or_create_account(data_dir / key_name)
        key_record = key_name
    else:
        key_record = None

    genesis = w3.eth.get_block(0)["hash"].hex()
    if meta is not None:
        address = to_checksum_address(meta["contract_address"])
        if meta.get("genesis_hash") != genesis:
            raise LedgerError("open_or_deploy", f"{meta_path} records a ledger on another chain "
                                                f"(genesis {meta.get('genesis_hash')}, this chain {genesis}); "
                                                "move it away to start a new ledger")
        if not w3.eth.get_code(address):
            raise LedgerError("open_or_deploy", f"no contract at {address} recorded in {meta_path}")
        if meta.get("account_address") not in (None, account.address):
            log.warning("ledger %s was deployed by %s; now signing as %s", address, meta["account_address"],
                        account.address)
        return LedgerClient(w3, address, account)

    if funder is not None and w3.eth.get_balance(account.address) < fund_wei // 2:
        fund(w3, funder, account.address, fund_wei)
    address = deploy_ledger(w3, account, sentinel_node_id, fingerprint, endpoint)
    atomic_write(meta_path, (json.dumps({
        "version": 1,
        "contract_address": address,
        "chain_id": int(w3.eth.chain_id),
        "genesis_hash": genesis,
        "deploy_block": int(w3.eth.block_number),
        "account_address": account.address,
        "account_key": key_record,
        "source_sha256": load_artifact()["sourceSha256"],
    }, indent=1, sort_keys=True) + "\n").encode("utf-8"), mode=0o644)
    return LedgerClient(w3, address, account)


def connect_external(url: str, timeout: float = 30.0) -> Web3:
    """A Web3 on an external JSON-RPC chain (``--ledger-url``: anvil, geth, Besu).

    Raises LedgerError if the endpoint does not answer ``eth_chainId``.
    """
    w3 = Web3(HTTPProvider(url, request_kwargs={"timeout": timeout}))
    # Proof-of-authority chains (geth clique, Besu) carry signatures in extraData,
    # which web3 rejects in blocks without this; harmless elsewhere.
    w3.middleware_onion.inject(ExtraDataToPOAMiddleware, layer=0)
    try:
        w3.eth.chain_id
    except Exception as exc:  # noqa: BLE001 - any failure means unreachable
        raise LedgerError("connect_external", f"no JSON-RPC chain at {url}: {exc}") from exc
    return w3


def external_account(w3: Web3, private_key: str | bytes | None = None) -> LocalAccount:
    """The sentinel's signing account on an external chain.

    The key given by the user if any; otherwise, on a dev chain (chain id
    31337, anvil/hardhat), anvil's first dev account, which anvil funds.
    Any other chain without a key raises LedgerError.
    """
    if private_key:
        return Account.from_key(private_key)
    chain_id = int(w3.eth.chain_id)
    if chain_id == ANVIL_CHAIN_ID:
        return Account.from_key(ANVIL_DEV_KEY)
    raise LedgerError("external_account", f"chain {chain_id} is not a dev chain: give the sentinel a funded key")
