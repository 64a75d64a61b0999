"""The fast paths of digest.py and check_finite give exactly what the plain ones gave:
block hashes spread over threads, and the one-pass sum that proves a vector finite."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from swarm.tensors import (
    BLOCK_BYTES,
    Layout,
    WeightsError,
    block_hashes,
    check_finite,
    verify_blocks,
    weights_digest,
)
from swarm.tensors.digest import PARALLEL_MIN_BYTES


def _vector(elements: int) -> np.ndarray:
    return (np.arange(elements, dtype=np.float64) % 977 / 977).astype(np.float32)


def _serial_hashes(flat: np.ndarray) -> list[bytes]:
    raw = flat.tobytes()
    return [hashlib.sha256(raw[i:i + BLOCK_BYTES]).digest()
            for i in range(0, len(raw), BLOCK_BYTES)]


def test_the_digest_is_the_one_computed_before_hashing_went_parallel():
    # 12 MB, over PARALLEL_MIN_BYTES: the threaded path. The value is what the serial
    # implementation (commit ee97188) gave for this vector.
    flat = _vector(3_000_001)
    assert flat.nbytes > PARALLEL_MIN_BYTES
    digest, hashes = weights_digest(Layout.from_weights({"w": flat}), flat)
    assert digest.hex() == "8ddaf7c1ae5129ed151f983393d68d25708ef718a4f939cd4877d6e892d863d7"
    assert hashes == _serial_hashes(flat)


@pytest.mark.parametrize("nbytes", [
    0, 100, BLOCK_BYTES, PARALLEL_MIN_BYTES - 4, PARALLEL_MIN_BYTES,
    PARALLEL_MIN_BYTES + 4, 3 * PARALLEL_MIN_BYTES + BLOCK_BYTES + 4, 7 * BLOCK_BYTES * 13])
def test_block_hashes_in_threads_equal_the_serial_ones(nbytes):
    flat = _vector(nbytes // 4)
    assert block_hashes(flat) == _serial_hashes(flat)


def test_verify_blocks_still_names_the_first_bad_block_of_a_big_run():
    flat = _vector(3_000_001)
    hashes = _serial_hashes(flat)
    verify_blocks(flat, 0, hashes, "peer")
    broken = flat.copy()
    broken[BLOCK_BYTES // 4 * 150 + 3] += 1  # in block 150
    broken[BLOCK_BYTES // 4 * 170] += 1      # and 170: the first is named
    with pytest.raises(WeightsError, match=r"peer: block 150 of 184 \(vector bytes 9830400\.\."):
        verify_blocks(broken, 0, hashes, "peer")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_check_finite_finds_every_kind_of_non_finite_value(bad):
    flat = _vector(3_000_001)
    flat[2_500_000] = bad
    with pytest.raises(WeightsError, match="1 non-finite value .* the first at element 2500000"):
        check_finite(flat)


def test_check_finite_accepts_finite_values_whose_sum_overflows():
    flat = np.full(1000, 3e38, dtype=np.float32)  # sums to Inf in float32
    check_finite(flat)
    check_finite(np.full(10, 60000, dtype=np.float16))
    with pytest.raises(WeightsError, match="2 non-finite values"):
        check_finite(np.array([np.inf, -np.inf, 1], dtype=np.float32))  # sums to NaN
