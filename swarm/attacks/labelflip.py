"""Label flipping: a data-poisoning attack in which malicious nodes train on wrong labels.

Tolpegin, Truex, Gursoy, Liu, "Data Poisoning Attacks Against Federated Learning
Systems", ESORICS 2020 (after Biggio, Nelson, Laskov, "Poisoning Attacks against Support
Vector Machines", ICML 2012).

``reverse`` maps class y to ``num_classes - 1 - y`` (0 <-> 9 for digits; with an odd
number of classes the middle one maps to itself); ``permutation`` maps the classes through
a seeded derangement (a random cycle), so every chosen label changes. Only the labels of
the chosen samples (a seeded ``fraction`` of them, all by default) change; x never does.
"""

from __future__ import annotations

import numpy as np

MODES = ("reverse", "permutation")


def class_map(num_classes: int, mode: str = "reverse", seed: int = 0) -> np.ndarray:
    """The flip as a table: label y becomes ``class_map(...)[y]``."""
    if num_classes < 2:
        raise ValueError(f"label flipping needs at least 2 classes, not num_classes={num_classes}")
    if mode == "reverse":
        return np.arange(num_classes - 1, -1, -1, dtype=np.int64)
    if mode == "permutation":
        # A random cyclic order: each class goes to the next one in it, never to itself.
        cycle = np.random.default_rng(seed).permutation(num_classes)
        table = np.empty(num_classes, dtype=np.int64)
        table[cycle] = np.roll(cycle, -1)
        return table
    raise ValueError(f"label flip mode {mode!r} is not one of {', '.join(MODES)}")


def chosen(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of the round(fraction * n) samples to poison (seeded), all for 1.0."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction {fraction} is not between 0 and 1")
    count = int(round(fraction * n))
    if count >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).permutation(n)[:count])


def flip_labels(y: np.ndarray, num_classes: int, *, seed: int = 0, mode: str = "reverse",
                fraction: float = 1.0) -> np.ndarray:
    """A copy of ``y`` with the chosen samples' labels flipped (same dtype and shape)."""
    y = np.asarray(y)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (num_classes={num_classes}), "
                         f"found {int(y.min())}..{int(y.max())}")
    table = class_map(num_classes, mode, seed)
    out = y.copy()
    idx = chosen(len(y), fraction, seed)
    out[idx] = table[y[idx]].astype(y.dtype)
    return out
