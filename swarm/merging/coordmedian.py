"""Coordinate-wise weighted median.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018.

The weighted median used here is the LOWER weighted median: per coordinate, sort the n
values ascending (a stable sort, so equal values keep participant order), accumulate
their weights in that order, and take the first value at which the running weight
reaches at least half of the total. With equal weights this is the middle value for odd
n and the lower of the two middle values for even n (Yin et al. average those two; a
lower median always returns one participant's value, needs no arithmetic and never
depends on rounding).
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


@dataclass(frozen=True)
class CoordMedian:
    """The lower weighted median of each coordinate (see the module docstring). No
    parameters. Robust while the poisoned participants hold less than half the weight."""

    name: ClassVar[str] = "coordmedian"
    coordinate_wise: ClassVar[bool] = True

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        updates, w = check_inputs(updates, weights)
        return weighted_lower_median(updates, w, output(out, updates))
