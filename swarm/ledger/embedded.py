"""The sentinel's embedded chain: eth-tester/py-evm in process, durable on disk.

eth-tester keeps its whole chain in an in-memory key-value store. Here that
store journals every write to ``<data_dir>/chain.journal`` and, after each
request that changed anything (in practice: each mined block, since
eth-tester mines one block per transaction), appends a commit marker and
fsyncs. A transaction whose receipt a caller has seen is therefore on disk,
and a SIGKILL at any moment loses at most the block being written: on the
next start the journal is replayed up to its last commit marker and a torn
tail is cut off.

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
from eth_abi import encode as abi_encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3 import HTTPProvider, Web3
from web3.middleware import ExtraDataToPOAMiddleware
from web3.providers.eth_tester import EthereumTesterProvider

from .client import LedgerClient, LedgerError, deploy_ledger, fund, load_artifact, load_or_create_account

log = logging.getLogger(__name__)

JOURNAL_NAME = "chain.journal"
LOCK_NAME = "chain.lock"
LEDGER_META_NAME = "ledger.json"
LEDGER_KEY_NAME = "ledger.key"
DEFAULT_FUND_WEI = 100 * 10**18

#: anvil's (and hardhat's) well-known first dev key, from the public "test test ... junk"
#: mnemonic: used for the sentinel only on a dev chain (chain id 31337) when no key is given.
ANVIL_DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
ANVIL_CHAIN_ID = 31337

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


def _replay(data: bytes) -> tuple[dict[bytes, bytes], int, int]:
    """Apply a journal image: returns (store, end of last commit, commit count)."""
    store: dict[bytes, bytes] = {}
    pending: list[tuple[bytes, bytes | None]] = []
    pos = committed_end = len(_MAGIC)
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
        else:
            key = bytes(view[kstart:kstart + klen])
            pending.append((key, bytes(view[kstart + klen:kstart + klen + vlen]) if op == _OP_SET else None))
        pos = end
    return store, committed_end, commits


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_snapshot(path: Path, store: Mapping[bytes, bytes]) -> None:
    """Atomically replace the journal with one commit holding ``store``."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(_MAGIC)
        for key, value in store.items():
            fh.write(_record(_OP_SET, key, value))
        fh.write(_record(_OP_COMMIT, b"", (0).to_bytes(8, "big")))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
                 compact_min_bytes: int = 8 << 20) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.journal_path = self.data_dir / JOURNAL_NAME
        # Two writers would interleave journal records: one process per data dir.
        # The kernel drops the lock when its holder dies, even by SIGKILL.
        self._lock_fd = os.open(self.data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise LedgerError("EmbeddedChain", f"{self.data_dir} is in use by another process") from None

        try:
            self._open(compact_ratio, compact_min_bytes)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, compact_ratio: float, compact_min_bytes: int) -> None:
        from eth_tester import EthereumTester, PyEVMBackend

        # A throwaway genesis chain provides the chain class, the dev keys and,
        # on a fresh start, the genesis database.
        backend = PyEVMBackend()
        chain_class = type(backend.chain)

        store: dict[bytes, bytes] = {}
        size = committed = commits = 0
        if self.journal_path.exists():
            data = self.journal_path.read_bytes()
            size = len(data)
            if data[:len(_MAGIC)] == _MAGIC:
                store, committed, commits = _replay(data)
            elif size >= len(_MAGIC):
                raise LedgerError("EmbeddedChain", f"{self.journal_path} is not a chain journal")
            del data
        if commits == 0:
            # Fresh start (or killed before the genesis commit): persist genesis.
            store = dict(backend.chain.chaindb.db.wrapped_db.kv_store)
            _write_snapshot(self.journal_path, store)
            action = "created"
        else:
            live = sum(len(k) + len(v) + _HEAD.size + _CRC.size for k, v in store.items())
            if committed > compact_min_bytes and committed > compact_ratio * live:
                _write_snapshot(self.journal_path, store)
                action = "compacted"
            elif committed < size:
                # Cut a torn tail (kill -9 mid-commit) so new records follow a good one.
                with open(self.journal_path, "r+b") as fh:
                    fh.truncate(committed)
                    fh.flush()
                    os.fsync(fh.fileno())
                action = "truncated"
            else:
                action = "replayed"
        self.load_info = {"action": action, "commits": commits, "dropped_bytes": max(0, size - committed)
                          if commits else 0, "keys": len(store)}
        if action == "truncated":
            log.warning("chain journal: dropped a torn tail of %d bytes", size - committed)

        self._db = _JournaledDB(store, self.journal_path, commits)
        backend.chain = chain_class(AtomicDB(self._db))
        self.tester = EthereumTester(backend)
        self._lock = threading.RLock()
        self.provider = EmbeddedProvider(self.tester, self._lock, self._db.commit)
        self.w3 = Web3(self.provider)
        # A second provider object on the same tester for raw JSON-RPC serving,
        # so its middleware-free request function is cached separately.
        self._rpc_provider = EmbeddedProvider(self.tester, self._lock, self._db.commit)
        rpc_w3 = Web3(self._rpc_provider, middleware=[])
        self._rpc = self._rpc_provider.request_func(rpc_w3, rpc_w3.middleware_onion)
        self.dev_accounts: list[LocalAccount] = [Account.from_key(k.to_bytes()) for k in backend.account_keys]

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

    def _handle_one(self, req: Any) -> dict:
        if not isinstance(req, dict) or not isinstance(req.get("method"), str):
            return _rpc_error(req.get("id") if isinstance(req, dict) else None, -32600, "invalid request")
        rid, method, params = req.get("id"), req["method"], req.get("params", [])
        if method not in ALLOWED_METHODS:
            return _rpc_error(rid, -32601, f"method {method!r} is not allowed on this ledger endpoint "
                                           "(read-only methods and eth_sendRawTransaction only)")
        if not isinstance(params, list):
            return _rpc_error(rid, -32602, f"{method}: params must be a list")
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

def _write_json_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=1, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


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
    _write_json_atomic(meta_path, {
        "version": 1,
        "contract_address": address,
        "chain_id": int(w3.eth.chain_id),
        "genesis_hash": genesis,
        "deploy_block": int(w3.eth.block_number),
        "account_address": account.address,
        "account_key": key_record,
        "source_sha256": load_artifact()["sourceSha256"],
    })
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
