"""Digests: stable, sensitive to every bit and to the layout, checkable shard by shard."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from swarm.tensors import (
    BLOCK_BYTES,
    Layout,
    TensorSpec,
    WeightsError,
    block_byte_range,
    block_hashes,
    digest_from_hashes,
    verify_blocks,
    verify_hash_list,
    weights_digest,
)

# 20 blocks, the last one short: 19 full blocks plus 1000 bytes.
N_ELEMENTS = (19 * BLOCK_BYTES + 1000) // 4


def make() -> tuple[Layout, np.ndarray]:
    rng = np.random.default_rng(0)
    w = {"a": rng.standard_normal(N_ELEMENTS - 10, dtype=np.float32), "b": rng.standard_normal(10, dtype=np.float32)}
    layout = Layout.from_weights(w)
    return layout, layout.flatten(w)


def test_digest_is_stable_and_matches_its_definition() -> None:
    layout, flat = make()
    assert layout.num_blocks == 20
    digest, hashes = weights_digest(layout, flat)
    assert len(hashes) == 20 and all(len(h) == 32 for h in hashes)
    assert hashes[-1] == hashlib.sha256(flat.tobytes()[19 * BLOCK_BYTES:]).digest()
    assert digest == hashlib.sha256(b"swarm-weights-v1" + layout.fingerprint + b"".join(hashes)).digest()
    assert weights_digest(layout, flat.copy()) == (digest, hashes)
    assert block_hashes(flat.tobytes()) == hashes == block_hashes(memoryview(flat))
    assert digest_from_hashes(layout.fingerprint, hashes) == digest
    verify_hash_list(layout, hashes, digest, who="sl-2")


@pytest.mark.parametrize("block", [0, 7, 19])
def test_one_flipped_bit_changes_the_digest(block: int) -> None:
    layout, flat = make()
    digest, hashes = weights_digest(layout, flat)
    raw = flat.view(np.uint8)
    pos = min(block * BLOCK_BYTES + 123, raw.size - 1)
    raw[pos] ^= 0x10
    digest2, hashes2 = weights_digest(layout, flat)
    assert digest2 != digest
    assert [i for i in range(20) if hashes[i] != hashes2[i]] == [block]


def test_layout_change_changes_the_digest() -> None:
    layout, flat = make()
    digest, hashes = weights_digest(layout, flat)
    # Same bytes, tensors cut differently.
    other = Layout((TensorSpec("a", (N_ELEMENTS - 11,), "float32"), TensorSpec("b", (11,), "float32")), "dict", "float32")
    assert weights_digest(other, flat)[0] != digest
    with pytest.raises(WeightsError, match="do not match the recorded digest"):
        verify_hash_list(other, hashes, digest, who="sl-2")


def test_hash_list_checks() -> None:
    layout, flat = make()
    digest, hashes = weights_digest(layout, flat)
    with pytest.raises(WeightsError, match="sl-3: expected 20 block hashes, got 19"):
        verify_hash_list(layout, hashes[:-1], digest, who="sl-3")
    forged = list(hashes)
    forged[5] = hashlib.sha256(b"x").digest()
    with pytest.raises(WeightsError, match="sl-3: block hashes do not match"):
        verify_hash_list(layout, forged, digest, who="sl-3")
    with pytest.raises(WeightsError, match="block hash 2 must be 32 bytes"):
        digest_from_hashes(layout.fingerprint, hashes[:2] + [b"short"])


def test_verify_a_shard_of_blocks() -> None:
    layout, flat = make()
    _, hashes = weights_digest(layout, flat)
    start, end = block_byte_range(range(3, 8), layout.nbytes)
    shard = bytearray(flat.tobytes()[start:end])
    verify_blocks(shard, 3, hashes, who="sl-4")
    verify_blocks(memoryview(shard), 3, hashes, who="sl-4")
    assert block_hashes(shard, first_block=3) == hashes[3:8]
    # The short last block, alone and in a tail shard.
    tail0, tail1 = block_byte_range(range(17, 20), layout.nbytes)
    verify_blocks(flat.tobytes()[tail0:tail1], 17, hashes, who="sl-4")
    # An empty shard is trivially fine.
    verify_blocks(b"", 20, hashes, who="sl-4")

    shard[2 * BLOCK_BYTES + 5] ^= 1  # inside block 5
    with pytest.raises(WeightsError, match=r"sl-4: block 5 of 20 \(vector bytes 327680\.\.393216\) does not match its hash"):
        verify_blocks(shard, 3, hashes, who="sl-4")


def test_verify_blocks_rejects_misplaced_runs() -> None:
    layout, flat = make()
    _, hashes = weights_digest(layout, flat)
    raw = flat.tobytes()
    with pytest.raises(WeightsError, match="outside the 20 blocks"):
        verify_blocks(raw[: 3 * BLOCK_BYTES], 18, hashes, who="sl-5")
    with pytest.raises(WeightsError, match="block 4 is short"):
        verify_blocks(raw[3 * BLOCK_BYTES: 5 * BLOCK_BYTES - 1], 3, hashes, who="sl-5")
    with pytest.raises(WeightsError, match="block 19 of 20"):  # truncated final block
        verify_blocks(raw[19 * BLOCK_BYTES: -1], 19, hashes, who="sl-5")
    # Right bytes, wrong position.
    with pytest.raises(WeightsError, match="block 4 of 20"):
        verify_blocks(raw[3 * BLOCK_BYTES: 5 * BLOCK_BYTES], 4, hashes, who="sl-5")


def test_float64_wire_digest_and_non_wire_input() -> None:
    layout = Layout.from_weights([np.arange(5, dtype=np.float64)])
    flat = layout.flatten([np.arange(5, dtype=np.float64)])
    digest, hashes = weights_digest(layout, flat)
    assert len(hashes) == 1
    with pytest.raises(WeightsError, match="expected dtype float64"):
        weights_digest(layout, flat.astype(np.float32))
