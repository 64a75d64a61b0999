"""Digests of flat weight vectors that can be checked one shard at a time.

An update's digest is SHA-256 over a domain tag, the layout fingerprint and the
SHA-256 of every fixed 64 KiB block of the flat vector's bytes. The ledger records
only the digest; a sender ships its full block-hash list with its data, so a shard
owner can check the list against the ledger once and then each block it actually
received, without ever seeing the rest of the vector.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .layout import BLOCK_BYTES, Buffer, Layout, WeightsError

DIGEST_TAG = b"swarm-weights-v1"
HASH_BYTES = 32
# Vectors at least this large are hashed by several threads at once: hashlib drops
# the GIL while it hashes a block, so the blocks of a 45 MB model spread over cores.
PARALLEL_MIN_BYTES = 4 << 20
HASH_THREADS = max(1, min(4, os.cpu_count() or 1))
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(HASH_THREADS, thread_name_prefix="block-hash")
        return _pool


def _hash_run(raw: memoryview, start: int, stop: int) -> list[bytes]:
    sha = hashlib.sha256
    # Slicing a memoryview copies nothing; hashlib drops the GIL on large buffers.
    return [sha(raw[i:i + BLOCK_BYTES]).digest() for i in range(start, stop, BLOCK_BYTES)]


def _hash_blocks(raw: memoryview) -> list[bytes]:
    """SHA-256 of each block of raw, in order; threads share the work when it is big."""
    count = -(-raw.nbytes // BLOCK_BYTES)
    if raw.nbytes < PARALLEL_MIN_BYTES or HASH_THREADS == 1:
        return _hash_run(raw, 0, raw.nbytes)
    per = -(-count // HASH_THREADS) * BLOCK_BYTES
    runs = [(start, min(start + per, raw.nbytes)) for start in range(0, raw.nbytes, per)]
    pool = _hash_pool()
    # This thread takes the first run itself instead of waiting idle.
    futures = [pool.submit(_hash_run, raw, start, stop) for start, stop in runs[1:]]
    out = _hash_run(raw, *runs[0])
    for future in futures:
        out += future.result()
    return out


def as_bytes(data: Buffer) -> memoryview:
    """A flat, zero-copy byte view of an array or buffer (arrays must be C-contiguous)."""
    if isinstance(data, np.ndarray):
        if not data.flags.c_contiguous:
            raise WeightsError(f"cannot take the bytes of a non-contiguous array of shape {data.shape}")
        return memoryview(data.reshape(-1).view(np.uint8))
    try:
        return memoryview(data).cast("B")
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"not a contiguous byte buffer: {exc}") from None


def block_hashes(data: Buffer, first_block: int = 0) -> list[bytes]:
    """SHA-256 of each 64 KiB block of ``data`` (the last one may be short).

    ``data`` starts on the boundary of block ``first_block`` of the flat vector: the
    whole vector (0), or one shard of it. A hash covers only its block's bytes, so the
    result does not depend on ``first_block``; a block's index is fixed by its position
    in the full list, which the digest binds.
    """
    if first_block < 0:
        raise WeightsError(f"first block must be >= 0, got {first_block}")
    return _hash_blocks(as_bytes(data))


def digest_from_hashes(layout_fingerprint: bytes, hashes: Sequence[bytes]) -> bytes:
    """The update digest: sha256(tag + layout fingerprint + all block hashes)."""
    if len(layout_fingerprint) != HASH_BYTES:
        raise WeightsError(f"layout fingerprint must be {HASH_BYTES} bytes, got {len(layout_fingerprint)}")
    h = hashlib.sha256(DIGEST_TAG)
    h.update(layout_fingerprint)
    for i, b in enumerate(hashes):
        if len(b) != HASH_BYTES:
            raise WeightsError(f"block hash {i} must be {HASH_BYTES} bytes, got {len(b)}")
        h.update(b)
    return h.digest()


def weights_digest(layout: Layout, flat: np.ndarray) -> tuple[bytes, list[bytes]]:
    """(digest, block hashes) of a whole flat vector in ``layout``."""
    vec = layout.as_flat(flat)
    hashes = block_hashes(vec if vec.flags.c_contiguous else np.ascontiguousarray(vec))
    return digest_from_hashes(layout.fingerprint, hashes), hashes


def verify_hash_list(layout: Layout, hashes: Sequence[bytes], digest: bytes, who: str) -> None:
    """Check a sender's full block-hash list against the digest recorded on the ledger."""
    if len(hashes) != layout.num_blocks:
        raise WeightsError(f"{who}: expected {layout.num_blocks} block hashes, got {len(hashes)}")
    got = digest_from_hashes(layout.fingerprint, hashes)
    if got != digest:
        raise WeightsError(
            f"{who}: block hashes do not match the recorded digest (expected {digest.hex()[:16]}..., "
            f"got {got.hex()[:16]}...)"
        )


def verify_blocks(data: Buffer, first_block: int, hashes: Sequence[bytes], who: str) -> None:
    """Check a run of blocks starting at ``first_block`` against the full hash list.

    Every block but the vector's last must be a full 64 KiB; a mismatch names the
    block (its index in the whole vector) and its byte range.
    """
    raw = as_bytes(data)
    total = len(hashes)
    count = -(-raw.nbytes // BLOCK_BYTES)
    if first_block < 0 or first_block + count > total:
        raise WeightsError(
            f"{who}: blocks {first_block}..{first_block + count - 1} are outside the {total} blocks of the vector"
        )
    if raw.nbytes % BLOCK_BYTES and first_block + count != total:
        last = first_block + count - 1
        raise WeightsError(
            f"{who}: block {last} is short ({raw.nbytes % BLOCK_BYTES} of {BLOCK_BYTES} bytes) "
            f"but is not the last block of the vector ({total - 1})"
        )
    for j, got in enumerate(_hash_blocks(raw)):
        if got != hashes[first_block + j]:
            start = j * BLOCK_BYTES
            index = first_block + j
            raise WeightsError(
                f"{who}: block {index} of {total} (vector bytes {index * BLOCK_BYTES}.."
                f"{index * BLOCK_BYTES + min(BLOCK_BYTES, raw.nbytes - start)}) does not match its hash"
            )
