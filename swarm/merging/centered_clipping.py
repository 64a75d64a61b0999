"""Centered clipping.

Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust Optimization",
ICML 2021.

The paper clips around the previous round's aggregate (with worker momentum). A merge
has no history, so the first center is a robust one-shot estimate, by default the
coordinate-wise weighted median, and each iteration re-centers:
``v <- v + sum_i (w_i / W) * clip_tau(x_i - v)`` with ``clip_tau(u) = u * min(1, tau/||u||)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import (AllReduce, check_choice, check_float, check_inputs, check_int,
                   column_blocks, no_allreduce, output, partial_sq_distances, reduced,
                   weighted_mean, weighted_sum)
from .coordmedian import weighted_lower_median

CENTERS: tuple[str, ...] = ("coordmedian", "mean")


@dataclass(frozen=True)
class CenteredClipping:
    """Iterated centered clipping, one allreduce of n partial squared norms per iteration.

    Parameters:
        tau: the clip radius, > 0, or None (default) for an adaptive radius: each
            iteration, the lower weighted median of the n distances ``||x_i - v||``. Model
            weights have no natural scale, so a fixed radius fits one model and not the
            next; the median distance is scale-free and set by the honest majority.
        iters: clipping iterations, >= 1 (default 3; the paper clips once per step,
            around a center carried over from the previous step, which a one-shot merge
            lacks, so a few iterations here move v from the median toward the clipped mean).
        center: the first center, "coordmedian" (default) or "mean" (the weighted mean:
            clipping moves v at most tau per iteration, so a mean dragged far off by
            poisoned updates stays off).
    """

    name: ClassVar[str] = "centeredclipping"
    coordinate_wise: ClassVar[bool] = False
    tau: float | None = None
    iters: int = 3
    center: str = "coordmedian"

    def __post_init__(self) -> None:
        if self.tau is not None:
            object.__setattr__(self, "tau", check_float(self.name, "tau", self.tau, 0.0,
                                                        low_open=True))
        object.__setattr__(self, "iters", check_int(self.name, "iters", self.iters, 1))
        object.__setattr__(self, "center",
                           check_choice(self.name, "center", self.center, CENTERS))

    def clip_factors(self, sq_norms: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """min(1, tau / ||x_i - v||) per participant, from the allreduced squared norms."""
        norms = np.sqrt(sq_norms)
        tau = (self.tau if self.tau is not None
               else float(weighted_lower_median(norms[:, None], weights)[0]))
        factors = np.ones_like(norms)
        far = norms > tau  # so never a division by zero
        factors[far] = tau / norms[far]
        return factors

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        updates, w = check_inputs(updates, weights)
        out = output(out, updates)
        d = updates.shape[1]
        v = np.empty(d, dtype=np.float64)
        if self.center == "mean":
            weighted_mean(updates, w, out=v)
        else:
            weighted_lower_median(updates, w, out=v)
        total = math.fsum(w)
        for _ in range(self.iters):
            sq_norms = reduced(allreduce, partial_sq_distances(updates, v))
            c = w * self.clip_factors(sq_norms, w) / total
            # v + sum_i c_i (x_i - v), block by block in place: a block's step needs
            # only that block of v, so one float64 iterate of the shard is enough.
            for block in column_blocks(*updates.shape):
                v[block] += weighted_sum(updates[:, block], c, offset=v[block])
        out[...] = v
        return out
