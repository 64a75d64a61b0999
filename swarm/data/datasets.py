"""The Dataset every loader returns, and the small bundled one (scikit-learn's digits)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DataError


@dataclass
class Dataset:
    """A train/test split of one data set.

    Images are uint8: (N, 32, 32, 3) NHWC for CIFAR, (N, 28, 28) for MNIST; the digits
    are float32 feature rows. Labels are int64 indices into ``classes``.
    ``scratch_dir`` is the kept scratch directory (loaders called with ``keep=True``
    that extracted or downloaded something); None when nothing was kept.
    """

    name: str
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]
    scratch_dir: Path | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load_digits(test_size: int = 400, seed: int = 0) -> Dataset:
    """scikit-learn's bundled 8x8 digits (1797 samples): a real data set needing no download.

    x is float32 in [0, 1] (pixel counts 0..16 divided by 16), shape (n, 64); the samples
    are shuffled with ``seed`` and the first ``test_size`` become the test set.
    """
    try:
        from sklearn.datasets import load_digits as sklearn_digits
    except ImportError:
        raise DataError("digits: load_digits needs scikit-learn; "
                        "install it (pip install scikit-learn)") from None
    bunch = sklearn_digits()
    x = (bunch.data / 16.0).astype(np.float32)
    y = bunch.target.astype(np.int64)
    if not 0 < test_size < len(y):
        raise DataError(f"digits: test_size must be between 1 and {len(y) - 1}, not {test_size}")
    order = np.random.default_rng(seed).permutation(len(y))
    test, train = order[:test_size], order[test_size:]
    return Dataset("digits", x[train], y[train], x[test], y[test],
                   [str(c) for c in range(10)])
