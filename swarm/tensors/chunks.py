"""Cutting a flat vector into shards and chunks, and putting a stream back together.

Shards are whole-block ranges so each owner can verify exactly the blocks it holds
(see digest.py); chunks are the gRPC message-sized pieces a shard streams in.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from .digest import as_bytes
from .layout import BLOCK_BYTES, Buffer, WeightsError

DEFAULT_CHUNK_BYTES = 1 << 20  # well under gRPC's default 4 MiB message limit


def shard_ranges(num_blocks: int, owners: int) -> list[range]:
    """Split ``num_blocks`` blocks into ``owners`` contiguous ranges whose sizes differ by
    at most one (the larger ones first); owner i merges ranges[i]. Some ranges are empty
    when there are fewer blocks than owners."""
    if owners < 1:
        raise WeightsError(f"need at least one shard owner, got {owners}")
    if num_blocks < 0:
        raise WeightsError(f"number of blocks must be >= 0, got {num_blocks}")
    base, extra = divmod(num_blocks, owners)
    out = []
    start = 0
    for i in range(owners):
        stop = start + base + (1 if i < extra else 0)
        out.append(range(start, stop))
        start = stop
    return out


def block_byte_range(blocks: range, nbytes: int) -> tuple[int, int]:
    """Byte span [start, end) of a run of blocks in a vector of ``nbytes`` bytes; the
    vector's last block may be short, and an empty run past it is (nbytes, nbytes)."""
    num_blocks = -(-nbytes // BLOCK_BYTES)
    if blocks.step != 1 or blocks.start < 0 or blocks.stop < blocks.start or blocks.stop > num_blocks:
        raise WeightsError(f"block range {blocks} is not a run within the {num_blocks} blocks of {nbytes} bytes")
    return min(blocks.start * BLOCK_BYTES, nbytes), min(blocks.stop * BLOCK_BYTES, nbytes)


def iter_chunks(buffer: Buffer, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> Iterator[memoryview]:
    """Zero-copy byte views of ``buffer``, ``chunk_bytes`` at a time (the last may be short)."""
    if chunk_bytes < 1:
        raise WeightsError(f"chunk size must be >= 1 byte, got {chunk_bytes}")
    raw = as_bytes(buffer)
    for i in range(0, raw.nbytes, chunk_bytes):
        yield raw[i:i + chunk_bytes]


class Assembler:
    """Receives a stream of byte chunks into one buffer allocated up front.

    The sender announces its size first; anything past it, or an announcement over
    ``limit_bytes``, is refused before it can cost memory.
    """

    def __init__(self, total_bytes: int, limit_bytes: int | None = None, who: str = "peer",
                 out: Buffer | None = None) -> None:
        if total_bytes < 0:
            raise WeightsError(f"{who} announced a negative size ({total_bytes} bytes)")
        if limit_bytes is not None and total_bytes > limit_bytes:
            raise WeightsError(f"{who} announced {total_bytes} bytes, over the limit of {limit_bytes} bytes")
        self.total_bytes = total_bytes
        self.who = who
        self.received = 0
        if out is None:
            # np.empty, not bytearray: no zero-fill pass over a buffer we overwrite anyway.
            self._buf = np.empty(total_bytes, dtype=np.uint8)
        else:
            # Straight into the caller's buffer (e.g. its place in the round's result),
            # saving a copy of every byte received.
            self._buf = np.frombuffer(as_bytes(out), dtype=np.uint8)
            if self._buf.size != total_bytes or not self._buf.flags.writeable:
                raise ValueError(f"out must be a writeable buffer of {total_bytes} bytes, "
                                 f"got {self._buf.size} bytes")
        self._view = memoryview(self._buf)

    def add(self, chunk: bytes | bytearray | memoryview) -> None:
        data = chunk if type(chunk) is bytes else as_bytes(chunk)
        end = self.received + len(data)
        if end > self.total_bytes:
            raise WeightsError(
                f"{self.who} sent more bytes than announced: {end} > {self.total_bytes}"
            )
        # A memoryview slice assignment: one memcpy, without numpy's per-call overhead
        # (hundreds of chunks per model).
        self._view[self.received:end] = data
        self.received = end

    @property
    def complete(self) -> bool:
        return self.received == self.total_bytes

    def finish(self) -> memoryview:
        """The whole buffer as a writeable byte view; WeightsError if the stream was short."""
        if self.received != self.total_bytes:
            raise WeightsError(f"{self.who} stream ended early: got {self.received} of {self.total_bytes} bytes")
        return memoryview(self._buf)
