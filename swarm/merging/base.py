"""The merge-method interface, and the checks and kernels every method shares.

A merge method turns the participants' values for ONE SHARD of the flat parameter
vector into the merged shard. In a sharded round each participant owns one shard and
calls the method on ``(n, d_shard)``; distance-based methods need norms over the WHOLE
vector, so they sum per-shard partial squared distances across owners with
``allreduce``. Everything a method branches on (iteration counts, convergence,
selections) is computed from allreduced values and parameters only, so every owner takes
the same branches and calls ``allreduce`` the same number of times with vectors of the
same length, even an owner whose shard is empty.

Numerics: values are accumulated in float64, row by row in participant order (never by
BLAS), so the same inputs give bit-identical outputs. Work is done in column blocks so
a large shard never needs a full float64 copy of ``updates``.

Memory: ``out`` (the shard's place in the round's result) receives the merged values
block by block, so a coordinate-wise method needs no shard-sized temporary at all; the
distance-based ones keep two float64 iterates of the shard (their numerics need them).
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Iterator, Protocol, runtime_checkable

import numpy as np

AllReduce = Callable[[np.ndarray], np.ndarray]
"""Returns the SUM over all shard owners of a small float64 vector.

Every owner must get bit-identical sums back (e.g. each sums the partials in owner
order), or owners could take different branches.
"""


def no_allreduce(x: np.ndarray) -> np.ndarray:
    """The allreduce of a single owner holding the whole vector: the identity."""
    return x


@runtime_checkable
class MergeMethod(Protocol):
    """Merges n participants' values for one shard into one value per coordinate."""

    name: str              # the registry name: "mean", "krum", ...
    coordinate_wise: bool  # True: each coordinate merged alone, allreduce never called

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        """``updates`` (n, d) in participant order, ``weights`` (n,) > 0 -> (d,), updates.dtype,
        written into ``out`` (returned) when given."""
        ...


# Column-block size: about 8 MiB of float64 per block whatever n is.
_BLOCK_VALUES = 1 << 20
# weighted_sum's block: 256 KiB of float64, twice (the row's values and the sum).
_SUM_BLOCK_VALUES = 1 << 15


def check_inputs(updates: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates one call's inputs; returns (updates as given, weights as float64).

    Only properties every owner shares (shape of n, dtype, weights) are checked here, so a
    bad call fails on every owner alike instead of leaving the others waiting in an
    allreduce. Values are not scanned for NaN/Inf: that is shard-local, and updates are
    checked when they arrive.
    """
    updates = np.asarray(updates)
    if updates.ndim != 2:
        raise ValueError(f"updates must be a 2-D array (n participants, d values), "
                         f"got shape {updates.shape}")
    if not np.issubdtype(updates.dtype, np.floating):
        raise ValueError(f"updates must have a floating dtype, got {updates.dtype}")
    n = updates.shape[0]
    if n == 0:
        raise ValueError("no updates to merge: n must be at least 1")
    w = np.asarray(weights)
    if w.shape != (n,):
        raise ValueError(f"weights must have shape (n,) = ({n},), one per participant, "
                         f"got shape {w.shape}")
    if not (np.issubdtype(w.dtype, np.floating) or np.issubdtype(w.dtype, np.integer)):
        raise ValueError(f"weights must be numbers, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    if not np.all(w > 0):
        raise ValueError(f"weights must be positive, got {w.tolist()}")
    return updates, w


def output(out: np.ndarray | None, updates: np.ndarray) -> np.ndarray:
    """Where a method writes its result: ``out`` if given (checked: shape (d,) and the
    updates' dtype), else a new array."""
    d = updates.shape[1]
    if out is None:
        return np.empty(d, dtype=updates.dtype)
    if out.shape != (d,) or out.dtype != updates.dtype:
        raise ValueError(f"out must have shape ({d},) and dtype {updates.dtype}, got shape "
                         f"{out.shape} and dtype {out.dtype}")
    return out


def column_blocks(n: int, d: int, values: int = _BLOCK_VALUES) -> Iterator[slice]:
    """Slices covering 0..d in blocks of about ``values`` values of an (n, d) array."""
    step = max(1, values // max(n, 1))
    for start in range(0, d, step):
        yield slice(start, min(start + step, d))


def weighted_sum(updates: np.ndarray, coeffs: np.ndarray,
                 offset: np.ndarray | None = None, out: np.ndarray | None = None,
                 rows: list[int] | np.ndarray | None = None) -> np.ndarray:
    """sum_i coeffs[i] * (updates[rows[i]] - offset) in float64, added in participant order
    (rows: all by default).

    Accumulated in float64 block by block; ``out`` (any float dtype, d values; a new
    float64 array by default) gets each block's sum cast to its dtype, exactly what
    casting the whole float64 sum would give. ``out`` must not overlap ``offset``."""
    n, d = updates.shape
    rows = range(n) if rows is None else rows
    if out is None:
        out = np.empty(d, dtype=np.float64)
    wide = out.dtype == np.float64
    # Blocks of one row's width: the float64 block and its sum stay in the core's
    # cache across the n rows (elementwise, so the blocking changes no bit).
    tmp = np.empty(min(d, _SUM_BLOCK_VALUES), dtype=np.float64)
    scratch = None if wide else np.empty_like(tmp)
    for block in column_blocks(1, d, _SUM_BLOCK_VALUES):
        width = block.stop - block.start
        acc = out[block] if wide else scratch[:width]
        acc[...] = 0.0
        part = tmp[:width]
        for c, i in zip(coeffs, rows):
            if offset is None:
                # float64(x) * c in one pass (the same operations as widening, then
                # multiplying: the same bits).
                np.multiply(updates[i, block], np.float64(c), out=part, dtype=np.float64)
            else:
                np.subtract(updates[i, block], offset[block], out=part)
                part *= c
            acc += part
        if not wide:
            out[block] = acc
    return out


def weighted_mean(updates: np.ndarray, weights: np.ndarray, out: np.ndarray | None = None,
                  rows: list[int] | np.ndarray | None = None) -> np.ndarray:
    """The weighted mean of the rows (or of ``rows`` with their ``weights``), float64 or
    cast into ``out``; coordinate-wise, so no allreduce.

    Normalised coefficients, so a single row (or one with all the weight) comes back exact.
    """
    return weighted_sum(updates, weights / math.fsum(weights), out=out, rows=rows)


def partial_sq_distances(updates: np.ndarray, center: np.ndarray) -> np.ndarray:
    """||updates[i] - center||^2 over this shard's coordinates, for each i (float64)."""
    n, d = updates.shape
    out = np.zeros(n, dtype=np.float64)
    for block in column_blocks(n, d):
        diff = updates[:, block].astype(np.float64)
        diff -= center[block]
        np.square(diff, out=diff)
        out += diff.sum(axis=1)
    return out


def reduced(allreduce: AllReduce, partial: np.ndarray) -> np.ndarray:
    """allreduce(partial), checked to be a float64 vector of the same length."""
    total = np.asarray(allreduce(np.ascontiguousarray(partial, dtype=np.float64)),
                       dtype=np.float64)
    if total.shape != partial.shape:
        raise ValueError(f"allreduce returned shape {total.shape} for a partial of shape "
                         f"{partial.shape}")
    return total


# --- parameter checks (raise ValueError naming the method and the parameter) -----------

def check_int(method: str, param: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{method}: {param} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(method: str, param: str, value: object, low: float, high: float = math.inf,
                low_open: bool = False) -> float:
    ok = (not isinstance(value, bool) and isinstance(value, numbers.Real)
          and math.isfinite(float(value))
          and (float(value) > low if low_open else float(value) >= low)
          and float(value) <= high)
    if not ok:
        bounds = f"{'(' if low_open else '['}{low}, {high}{']' if high < math.inf else ')'}"
        raise ValueError(f"{method}: {param} must be a finite number in {bounds}, got {value!r}")
    return float(value)


def check_choice(method: str, param: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{method}: {param} must be one of {', '.join(allowed)}, got {value!r}")
    return str(value)
