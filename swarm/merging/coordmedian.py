"""Coordinate-wise weighted median.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018.

Per coordinate, sort the n values ascending (a stable sort, so equal values keep
participant order) and accumulate their weights in that order. The lower weighted median
is the first value at which the running weight reaches at least half of the total, the
upper one the first at which it exceeds half; CoordMedian returns their midpoint, as
Yin et al. do. With equal weights that is the middle value for odd n and the mean of the
two middle values for even n. (The lower median alone, which an earlier version
returned, is the element-wise minimum of two participants and biases every coordinate
down for any even n.) ``weighted_lower_median`` stays for the methods that start from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import AllReduce, check_inputs, column_blocks, no_allreduce, output


def lower_median(values: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The lower median of each column with equal weights: the value of rank (n-1)//2,
    found by selection (np.partition), 1.3-3x faster than the weighted path's sort.
    Written into ``out`` (any float dtype that holds the values exactly) if given."""
    n, d = values.shape
    if out is None:
        out = np.empty(d, dtype=values.dtype)
    if n == 1:
        out[...] = values[0]
        return out
    if n == 2:  # the smaller of two
        for block in column_blocks(n, d):
            out[block] = np.minimum(values[0, block], values[1, block])
        return out
    for block in column_blocks(n, d):
        out[block] = np.partition(values[:, block], (n - 1) // 2, axis=0)[(n - 1) // 2]
    return out


def weighted_lower_median(values: np.ndarray, weights: np.ndarray,
                          out: np.ndarray | None = None) -> np.ndarray:
    """The lower weighted median of each column of ``values`` (n, d) -> (d,), same dtype,
    or into ``out`` (e.g. float64: the same values, exactly)."""
    n, d = values.shape
    if np.all(weights == weights[0]):
        return lower_median(values, out)
    if out is None:
        out = np.empty(d, dtype=values.dtype)
    for block in column_blocks(n, d):
        cols = values[:, block]
        order = np.argsort(cols, axis=0, kind="stable")
        running = np.cumsum(weights[order], axis=0)
        # Compare with the total summed in the same order, so the last row always qualifies.
        first = np.argmax(2.0 * running >= running[-1], axis=0)
        rows = np.take_along_axis(order, first[None, :], axis=0)
        out[block] = np.take_along_axis(cols, rows, axis=0)[0]
    return out


def weighted_median(values: np.ndarray, weights: np.ndarray,
                    out: np.ndarray | None = None) -> np.ndarray:
    """The midpoint of the lower and upper weighted medians of each column (n, d) -> (d,),
    written block by block into ``out`` if given (no shard-sized temporaries)."""
    n, d = values.shape
    if out is None:
        out = np.empty(d, dtype=values.dtype)
    for block in column_blocks(n, d):
        cols = values[:, block]
        if np.all(weights == weights[0]):  # selection of the two middle ranks
            ranks = np.partition(cols, ((n - 1) // 2, n // 2), axis=0)
            lo, hi = ranks[(n - 1) // 2], ranks[n // 2]
        else:
            order = np.argsort(cols, axis=0, kind="stable")
            running = np.cumsum(weights[order], axis=0)
            # Compare with the total summed in the same order, so the last row always qualifies.
            lo_row = np.argmax(2.0 * running >= running[-1], axis=0)
            hi_row = np.argmax(2.0 * running > running[-1], axis=0)
            sorted_cols = np.take_along_axis(cols, order, axis=0)
            lo = np.take_along_axis(sorted_cols, lo_row[None, :], axis=0)[0]
            hi = np.take_along_axis(sorted_cols, hi_row[None, :], axis=0)[0]
        out[block] = (lo.astype(np.float64) + hi) / 2
    return out


@dataclass(frozen=True)
class CoordMedian:
    """The weighted median of each coordinate (see the module docstring). No
    parameters. Robust while the poisoned participants hold less than half the weight."""

    name: ClassVar[str] = "coordmedian"
    coordinate_wise: ClassVar[bool] = True

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        updates, w = check_inputs(updates, weights)
        return weighted_median(updates, w, output(out, updates))
