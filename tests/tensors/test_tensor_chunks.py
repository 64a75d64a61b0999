"""Shards, chunks and the stream assembler."""

from __future__ import annotations

import numpy as np
import pytest

from swarm.tensors import (
    BLOCK_BYTES,
    Assembler,
    Layout,
    WeightsError,
    block_byte_range,
    iter_chunks,
    shard_ranges,
)


@pytest.mark.parametrize("owners", [1, 2, 3, 4, 5, 7, 8, 16, 33])
def test_shard_ranges_cover_every_block_once_balanced(owners: int) -> None:
    for num_blocks in [0, 1, 2, 3, 7, 8, 9, 31, 32, 33, 100, 691, 1000]:
        ranges = shard_ranges(num_blocks, owners)
        assert len(ranges) == owners
        assert [b for r in ranges for b in r] == list(range(num_blocks))  # contiguous, in order, once
        sizes = [len(r) for r in ranges]
        assert max(sizes) - min(sizes) <= 1
        assert all(r.step == 1 for r in ranges)


def test_shard_ranges_bad_input() -> None:
    with pytest.raises(WeightsError, match="at least one"):
        shard_ranges(10, 0)
    with pytest.raises(WeightsError, match=">= 0"):
        shard_ranges(-1, 2)


def test_block_byte_ranges_tile_the_vector() -> None:
    nbytes = 5 * BLOCK_BYTES + 40  # 6 blocks, the last one short
    spans = [block_byte_range(r, nbytes) for r in shard_ranges(6, 4)]
    assert spans == [(0, 2 * BLOCK_BYTES), (2 * BLOCK_BYTES, 4 * BLOCK_BYTES), (4 * BLOCK_BYTES, 5 * BLOCK_BYTES), (5 * BLOCK_BYTES, nbytes)]
    # More owners than blocks: the empty ranges are empty byte spans at the end.
    assert [block_byte_range(r, 100) for r in shard_ranges(1, 3)] == [(0, 100), (100, 100), (100, 100)]
    with pytest.raises(WeightsError, match="not a run within the 6 blocks"):
        block_byte_range(range(5, 7), nbytes)
    with pytest.raises(WeightsError):
        block_byte_range(range(0, 4, 2), nbytes)


@pytest.mark.parametrize("chunk, n", [(1, 1000), (7, 1001), (4096, 300_001), (1 << 20, 300_001), (10 << 20, 300_001)])
def test_iter_chunks_reassembles_exactly(chunk: int, n: int) -> None:
    data = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    pieces = list(iter_chunks(data, chunk))
    assert all(isinstance(p, memoryview) for p in pieces)
    assert all(len(p) == chunk for p in pieces[:-1]) and 0 < len(pieces[-1]) <= chunk
    assert b"".join(pieces) == data.tobytes()
    # Zero-copy: the views see later writes to the source.
    data[-1] = 42.0
    assert b"".join(pieces)[-4:] == np.float32(42.0).tobytes()


def test_iter_chunks_of_bytes_and_empty() -> None:
    assert list(iter_chunks(b"")) == []
    assert [bytes(p) for p in iter_chunks(b"abcdefg", 3)] == [b"abc", b"def", b"g"]
    with pytest.raises(WeightsError):
        list(iter_chunks(b"abc", 0))


def test_assembler_round_trip_into_unflatten() -> None:
    w = {"k": np.arange(100_000, dtype=np.float32).reshape(100, 1000), "n": np.array(3, dtype=np.int64)}
    layout = Layout.from_weights(w)
    flat = layout.flatten(w)
    asm = Assembler(layout.nbytes, limit_bytes=1 << 20, who="site-b/sl-1")
    for piece in iter_chunks(flat, 65_000):
        asm.add(piece)
    assert asm.received == layout.nbytes and asm.complete
    buf = asm.finish()
    assert bytes(buf) == flat.tobytes()
    back = layout.unflatten(buf)
    np.testing.assert_array_equal(back["k"], w["k"])
    assert back["n"] == 3 and back["n"].dtype == np.int64


def test_assembler_errors() -> None:
    asm = Assembler(10, who="site-b/sl-1")
    asm.add(b"12345")
    with pytest.raises(WeightsError, match="site-b/sl-1 stream ended early: got 5 of 10 bytes"):
        asm.finish()
    with pytest.raises(WeightsError, match="site-b/sl-1 sent more bytes than announced: 16 > 10"):
        asm.add(b"abcdefghijk")
    assert asm.received == 5  # the rejected chunk left nothing behind
    asm.add(bytearray(b"67890"))
    assert bytes(asm.finish()) == b"1234567890"
    with pytest.raises(WeightsError, match="site-c/sl-2 announced 2000 bytes, over the limit of 1000 bytes"):
        Assembler(2000, limit_bytes=1000, who="site-c/sl-2")
    with pytest.raises(WeightsError, match="negative"):
        Assembler(-1)
    empty = Assembler(0)
    assert bytes(empty.finish()) == b""
