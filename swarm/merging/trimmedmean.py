"""Coordinate-wise trimmed mean.

Yin, Chen, Ramchandran, Bartlett, "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import AllReduce, check_float, check_inputs, column_blocks, no_allreduce, output


@dataclass(frozen=True)
class TrimmedMean:
    """Per coordinate: sort the n values (stable, so ties keep participant order), drop
    ``t = floor(trim_ratio * n)`` values from EACH end, and return the weighted mean of the
    ``n - 2t`` values left, each with its participant's weight. Trimming counts values, not
    weight.

    Parameters:
        trim_ratio: the fraction of the n values cut from each end, in [0, 0.5]
            (default 0.25). A call where ``n - 2t < 1`` raises ValueError (e.g. 0.5 with
            even n). 0 is the weighted mean.
    """

    name: ClassVar[str] = "trimmedmean"
    coordinate_wise: ClassVar[bool] = True
    # A quarter from each end: withstands up to a quarter of poisoned peers on one side.
    trim_ratio: float = 0.25

    def __post_init__(self) -> None:
        object.__setattr__(self, "trim_ratio",
                           check_float(self.name, "trim_ratio", self.trim_ratio, 0.0, 0.5))

    def trim_count(self, n: int) -> int:
        """How many values are cut from each end of n; ValueError if none would be left."""
        t = math.floor(self.trim_ratio * n)
        if n - 2 * t < 1:
            raise ValueError(f"trimmedmean: trim_ratio={self.trim_ratio} cuts {t} of n={n} "
                             f"values from each end, leaving none")
        return t

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        updates, w = check_inputs(updates, weights)
        n, d = updates.shape
        t = self.trim_count(n)
        out = output(out, updates)
        # Smaller blocks: each holds an int64 sort order of all n rows (per column, so
        # the blocking never changes a value).
        for block in column_blocks(n, d, 1 << 18):
            cols = updates[:, block]
            order = np.argsort(cols, axis=0, kind="stable")
            num = np.zeros(cols.shape[1], dtype=np.float64)
            den = np.zeros(cols.shape[1], dtype=np.float64)
            for k in range(t, n - t):  # the kept ranks, added in sorted order
                kw = w[order[k]]
                num += kw * np.take_along_axis(cols, order[k:k + 1], axis=0)[0].astype(np.float64)
                den += kw
            out[block] = num / den  # cast per block: the same as casting the whole
        return out
