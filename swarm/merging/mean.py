"""Weighted mean: Federated Averaging.

McMahan, Moore, Ramage, Hampson, Agüera y Arcas, "Communication-Efficient Learning of
Deep Networks from Decentralized Data", AISTATS 2017 (FedAvg).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from .base import AllReduce, check_inputs, no_allreduce, output, weighted_mean


@dataclass(frozen=True)
class Mean:
    """``sum_i w_i x_i / sum_i w_i`` per coordinate. No parameters; not robust: one
    participant can move the result anywhere."""

    name: ClassVar[str] = "mean"
    coordinate_wise: ClassVar[bool] = True

    def __call__(self, updates: np.ndarray, weights: np.ndarray,
                 allreduce: AllReduce = no_allreduce, out: np.ndarray | None = None
                 ) -> np.ndarray:
        updates, w = check_inputs(updates, weights)
        return weighted_mean(updates, w, out=output(out, updates))
