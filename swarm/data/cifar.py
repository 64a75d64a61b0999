"""CIFAR-10 and CIFAR-100 from their "python version" tarballs.

cifar-10-python.tar.gz holds cifar-10-batches-py/{data_batch_1..5, test_batch,
batches.meta}; cifar-100-python.tar.gz holds cifar-100-python/{train, test, meta}.
Each batch is a pickled dict whose b"data" is an (N, 3072) uint8 array: per image the
1024 red, then green, then blue values of a 32x32 image in row-major order. Labels are
b"labels" (CIFAR-10) or b"fine_labels"/b"coarse_labels" (CIFAR-100); class names are in
the meta file. Images come back as uint8 NHWC (N, 32, 32, 3), labels as int64.
"""

from __future__ import annotations

import os

import numpy as np

from .datasets import Dataset
from .errors import DataError
from .sources import Local, Source, Spec, materialize
from .unpickle import load_pickle

CIFAR10 = Spec("cifar10", "cifar-10-python.tar.gz", "cifar-10-batches-py", "batches.meta")
CIFAR100 = Spec("cifar100", "cifar-100-python.tar.gz", "cifar-100-python", "meta")

CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR100_LABEL_MODES = ("fine", "coarse")

_SIDE, _CHANNELS = 32, 3
_ROW = _SIDE * _SIDE * _CHANNELS


def rows_to_images(rows: np.ndarray) -> np.ndarray:
    """(N, 3072) CIFAR rows (R, G, B planes) -> contiguous (N, 32, 32, 3) NHWC."""
    planes = rows.reshape(-1, _CHANNELS, _SIDE, _SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1))


def images_to_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) NHWC -> (N, 3072) CIFAR rows; the inverse of ``rows_to_images``."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(-1, _ROW)


def load_cifar10(source: Source = None, *, sha256: str | None = None, keep: bool = False,
                 scratch: str | os.PathLike[str] | None = None) -> Dataset:
    """CIFAR-10 (10 classes) from ``source``: None ($DATA_DIR), a directory, file or URL.

    ``sha256`` checks the tarball; it is extracted into a scratch directory under
    ``scratch`` (default: the system temp dir), removed afterwards unless ``keep``.
    """
    with materialize(CIFAR10, source, sha256=sha256, keep=keep, scratch=scratch) as local:
        classes = _names(CIFAR10, local, _entry(CIFAR10, local, "batches.meta", "label_names"))
        train = [_batch(CIFAR10, local, name, "labels") for name in CIFAR10_TRAIN_BATCHES]
        test_x, test_y = _batch(CIFAR10, local, "test_batch", "labels")
        train_x = np.concatenate([x for x, _ in train])
        train_y = np.concatenate([y for _, y in train])
        dataset = Dataset("cifar10", train_x, train_y, test_x, test_y, classes,
                          local.scratch.kept)
    _check_labels(CIFAR10, local, dataset)
    return dataset


def load_cifar100(source: Source = None, *, label_mode: str = "fine", sha256: str | None = None,
                  keep: bool = False, scratch: str | os.PathLike[str] | None = None) -> Dataset:
    """CIFAR-100 with its 100 ``"fine"`` or 20 ``"coarse"`` labels; otherwise as ``load_cifar10``."""
    if label_mode not in CIFAR100_LABEL_MODES:
        raise DataError(f"cifar100: label_mode must be 'fine' or 'coarse', not {label_mode!r}")
    labels = f"{label_mode}_labels"
    with materialize(CIFAR100, source, sha256=sha256, keep=keep, scratch=scratch) as local:
        classes = _names(CIFAR100, local,
                         _entry(CIFAR100, local, "meta", f"{label_mode}_label_names"))
        train_x, train_y = _batch(CIFAR100, local, "train", labels)
        test_x, test_y = _batch(CIFAR100, local, "test", labels)
        dataset = Dataset("cifar100", train_x, train_y, test_x, test_y, classes,
                          local.scratch.kept)
    _check_labels(CIFAR100, local, dataset)
    return dataset


def _read(spec: Spec, local: Local, name: str) -> tuple[dict, str]:
    """One pickled dict of the extracted folder, and how messages name its file."""
    shown = f"{spec.folder}/{name} (from {local.shown})"
    path = local.path / name
    if not path.is_file():
        raise DataError(f"{spec.name}: {spec.folder}/{name} is missing from {local.shown}")
    content = load_pickle(path, dataset=spec.name, shown=shown)
    if not isinstance(content, dict):
        raise DataError(f"{spec.name}: {shown} is not a CIFAR file: it holds a "
                        f"{type(content).__name__}, not a dict")
    return content, shown


def _get(spec: Spec, content: dict, shown: str, key: str) -> object:
    """One entry; the real files' keys are bytes (Python 2 str), str keys are accepted too."""
    for candidate in (key.encode(), key):
        if candidate in content:
            return content[candidate]
    raise DataError(f"{spec.name}: {shown} has no {key!r} entry")


def _entry(spec: Spec, local: Local, name: str, key: str) -> object:
    content, shown = _read(spec, local, name)
    return _get(spec, content, shown, key)


def _batch(spec: Spec, local: Local, name: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch file's images (N, 32, 32, 3) uint8 and labels (N,) int64."""
    content, shown = _read(spec, local, name)
    rows, labels = _get(spec, content, shown, "data"), _get(spec, content, shown, label_key)
    if not (isinstance(rows, np.ndarray) and rows.dtype == np.uint8 and rows.ndim == 2
            and rows.shape[1] == _ROW):
        what = (f"{rows.dtype} {rows.shape}" if isinstance(rows, np.ndarray)
                else type(rows).__name__)
        raise DataError(f"{spec.name}: {shown}: 'data' is {what}, expected uint8 (N, {_ROW})")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = None
    if y is None or y.shape != (len(rows),):
        raise DataError(f"{spec.name}: {shown}: {label_key!r} is not {len(rows)} integer labels")
    return rows_to_images(rows), y


def _names(spec: Spec, local: Local, names: object) -> list[str]:
    if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{spec.name}: the class names in {local.shown} are not a list of strings")
    return [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in names]


def _check_labels(spec: Spec, local: Local, dataset: Dataset) -> None:
    for y in (dataset.train_y, dataset.test_y):
        if len(y) and (y.min() < 0 or y.max() >= dataset.num_classes):
            raise DataError(f"{spec.name}: {local.shown} has labels outside 0.."
                            f"{dataset.num_classes - 1} (its {dataset.num_classes} classes)")
