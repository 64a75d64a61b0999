"""MNIST from the ``mnist.npz`` Keras distributes: x_train, y_train, x_test, y_test.

Images come back as uint8 (N, 28, 28), labels as int64. The arrays are read with
``allow_pickle=False``, so an .npz from a URL cannot run code.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from .datasets import Dataset
from .errors import DataError, reason
from .sources import Local, Source, Spec, materialize

MNIST = Spec("mnist", "mnist.npz")
MNIST_KEYS = ("x_train", "y_train", "x_test", "y_test")
MNIST_CLASSES = [str(digit) for digit in range(10)]

_SIDE = 28


def load_mnist(source: Source = None, *, sha256: str | None = None, keep: bool = False,
               scratch: str | os.PathLike[str] | None = None) -> Dataset:
    """MNIST from ``source``: None ($DATA_DIR), a directory, a file or a URL.

    ``sha256`` checks the file; a download goes into a scratch directory under
    ``scratch`` (default: the system temp dir), removed afterwards unless ``keep``.
    """
    with materialize(MNIST, source, sha256=sha256, keep=keep, scratch=scratch) as local:
        arrays = _read_npz(local)
        kept = local.scratch.kept
    train_x, train_y = _split(local, arrays, "train")
    test_x, test_y = _split(local, arrays, "test")
    return Dataset("mnist", train_x, train_y, test_x, test_y, list(MNIST_CLASSES), kept)


def _read_npz(local: Local) -> dict[str, np.ndarray]:
    # np.load reads anything that is not a zip as .npy or pickle: check first
    if not zipfile.is_zipfile(local.path):
        raise DataError(f"mnist: {local.shown} is truncated or corrupt, or not an .npz file "
                        "(no zip directory in it)")
    try:
        with np.load(local.path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in MNIST_KEYS if key in npz.files}
    except (zipfile.BadZipFile, EOFError, zlib.error, ValueError, OSError) as error:
        raise DataError(f"mnist: {local.shown} is truncated or corrupt, or not an .npz file "
                        f"({reason(error)})") from None
    missing = [key for key in MNIST_KEYS if key not in arrays]
    if missing:
        raise DataError(f"mnist: {local.shown} has no {', '.join(missing)} "
                        f"(an mnist.npz holds {', '.join(MNIST_KEYS)})")
    return arrays


def _split(local: Local, arrays: dict[str, np.ndarray], part: str) -> tuple[np.ndarray, np.ndarray]:
    """x_{part} as uint8 (N, 28, 28) and y_{part} as int64 digits, checked."""
    x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
    if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (_SIDE, _SIDE):
        raise DataError(f"mnist: {local.shown}: x_{part} is {x.dtype} {x.shape}, "
                        f"expected uint8 (N, {_SIDE}, {_SIDE})")
    if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"mnist: {local.shown}: y_{part} is {y.dtype} {y.shape}, "
                        f"expected {len(x)} integer labels")
    if len(y) and (y.min() < 0 or y.max() > 9):
        raise DataError(f"mnist: {local.shown}: y_{part} has labels outside 0..9")
    return x, y.astype(np.int64)
