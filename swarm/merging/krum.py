"""Krum and multi-Krum.

Blanchard, El Mhamdi, Guerraoui, Stainer, "Machine Learning with Adversaries: Byzantine
Tolerant Gradient Descent", NeurIPS 2017.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import (AllReduce, check_inputs, check_int, column_blocks, no_allreduce,
                   output, reduced, weighted_mean)


def partial_pair_sq_distances(updates: np.ndarray) -> np.ndarray:
    """||x_i - x_j||^2 over this shard for every pair i < j, in np.triu_indices(n, 1) order."""
    n, d = updates.shape
    rows, cols = np.triu_indices(n, 1)
    out = np.zeros(rows.size, dtype=np.float64)
    for block in column_blocks(n, d):
        x = updates[:, block].astype(np.float64)
        for p, (i, j) in enumerate(zip(rows, cols)):
            out[p] += np.square(x[i] - x[j]).sum()
    return out


def krum_scores(sq_dist: np.ndarray, n: int, f: int) -> np.ndarray:
    """Each participant's score: the sum of its n - f - 2 smallest squared distances to the
    others. ``sq_dist`` is the upper triangle, in np.triu_indices(n, 1) order."""
    full = np.zeros((n, n), dtype=np.float64)
    full[np.triu_indices(n, 1)] = sq_dist
    full += full.T
    k = n - f - 2
    scores = np.empty(n, dtype=np.float64)
    for i in range(n):
        others = np.sort(np.delete(full[i], i))
        scores[i] = others[:k].sum()
    return scores


@dataclass(frozen=True)
class Krum:
    """Scores each participant by the summed squared distances to its ``n - f - 2`` nearest
    others and returns the weighted mean of the ``m`` lowest-scoring updates (ties go to the
    lower participant index). ``m = 1`` is Krum: that one update itself. Scores ignore the
    weights; they only weight the average of the selected. One allreduce of the
    ``n(n-1)/2`` partial pairwise squared distances.

    Parameters:
        f: Byzantine participants to tolerate, >= 0, or None (default) for the most that
            n allows, ``max(0, (n - 3) // 2)``. Krum needs ``n > 2f + 2``: an explicit f
            with fewer participants raises ValueError. With the default f and ``n <= 2``,
            where Krum is undefined for any f, the weighted mean of all is returned.
        m: updates averaged, >= 1 (default 1 = Krum; > 1 = multi-Krum). More than n
            selects all n.
    """

    name: ClassVar[str] = "krum"
    coordinate_wise: ClassVar[bool] = False
    f: int | None = None
    m: int = 1

    def __post_init__(self) -> None:
        if self.f is not None:
            object.__setattr__(self, "f", check_int(self.name, "f", self.f, 0))
        object.__setattr__(self, "m", check_int(self.name, "m", self.m, 1))

    def byzantine(self, n: int) -> int:
        """The f used for n participants; ValueError when n is too small for an explicit f."""
        if self.f is None:
            return max(0, (n - 3) // 2)
        if n <= 2 * self.f + 2:
            raise ValueError(f"krum: tolerating f={self.f} Byzantine participants needs "
                             f"n > 2f + 2 = {2 * self.f + 2}, got n={n}")
        return self.f

    def select(self, sq_dist: np.ndarray, n: int) -> np.ndarray:
        """The selected participant indices, ascending, from the allreduced distances."""
        scores = krum_scores(sq_dist, n, self.byzantine(n))
        best = np.argsort(scores, kind="stable")[:min(self.m, n)]
        return np.sort(best)

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        updates, w = check_inputs(updates, weights)
        n = updates.shape[0]
        out = output(out, updates)
        if self.f is None and n <= 2:
            return weighted_mean(updates, w, out=out)
        self.byzantine(n)  # fail before any allreduce, on every owner alike
        chosen = self.select(reduced(allreduce, partial_pair_sq_distances(updates)), n)
        # The chosen rows in place (no copy of them), in ascending order as before.
        return weighted_mean(updates, w[chosen], out=out, rows=chosen)
