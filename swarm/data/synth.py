"""Small synthetic data sets written in exactly the real files' formats.

``write_cifar10``, ``write_cifar100`` and ``write_mnist`` write cifar-10-python.tar.gz,
cifar-100-python.tar.gz and mnist.npz with the real layouts (see ``cifar`` and
``mnist``), so tests and demos exercise the real loaders without the real downloads.
Each class has its own smooth random pattern; an image is mostly its class's pattern,
blurred by noise and translations, so a small model learns them well above chance.
For CIFAR-100, the five fine classes of a coarse class share half their pattern.
The same arguments give byte-identical files (fixed timestamps in the archives), so
a printed SHA-256 stays valid.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .cifar import CIFAR10, CIFAR10_TRAIN_BATCHES, CIFAR100, images_to_rows
from .mnist import MNIST, MNIST_CLASSES

PathLike = str | os.PathLike[str]

_FINE_PER_COARSE = 5
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
# How hard the images are: share of another class's pattern, pixel noise (sd),
# brightness noise (sd), largest translation in pixels.
_BLEND, _NOISE, _BRIGHTNESS, _SHIFT = 0.4, 72.0, 20.0, 4


def write_cifar10(out_dir: PathLike, *, train: int = 500, test: int = 100,
                  seed: int = 0) -> Path:
    """Writes ``out_dir``/cifar-10-python.tar.gz with ``train`` + ``test`` images; returns its path."""
    _check_sizes(train, test)
    rng = np.random.default_rng(seed)
    patterns = _patterns(rng, (10, 4, 4, 3), 8)
    names = [f"class{c}" for c in range(10)]
    train_x, train_y = _sample(rng, patterns, train)
    test_x, test_y = _sample(rng, patterns, test)
    members = {"batches.meta": _pickle({b"label_names": [n.encode() for n in names],
                                        b"num_cases_per_batch": -(-train // 5),
                                        b"num_vis": 3072})}
    batches = zip(CIFAR10_TRAIN_BATCHES, np.array_split(np.arange(train), 5))
    for number, (name, rows) in enumerate(batches, start=1):
        members[name] = _pickle(_cifar_batch(f"training batch {number} of 5", train_x[rows],
                                             {b"labels": train_y[rows]}, rows))
    members["test_batch"] = _pickle(_cifar_batch("testing batch 1 of 1", test_x,
                                                 {b"labels": test_y}, np.arange(test)))
    return _write_tar_gz(Path(out_dir) / CIFAR10.filename, CIFAR10.folder, members)


def write_cifar100(out_dir: PathLike, *, train: int = 500, test: int = 100,
                   seed: int = 0) -> Path:
    """Writes ``out_dir``/cifar-100-python.tar.gz (100 fine, 20 coarse classes); returns its path."""
    _check_sizes(train, test)
    rng = np.random.default_rng(seed)
    coarse = _patterns(rng, (20, 4, 4, 3), 8)
    own = _patterns(rng, (100, 4, 4, 3), 8)
    fine_to_coarse = np.arange(100) // _FINE_PER_COARSE
    patterns = (coarse[fine_to_coarse] // 2 + own // 2).astype(np.uint8)
    train_x, train_y = _sample(rng, patterns, train)
    test_x, test_y = _sample(rng, patterns, test)
    members = {"meta": _pickle({
        b"fine_label_names": [f"fine{c:02d}".encode() for c in range(100)],
        b"coarse_label_names": [f"coarse{c:02d}".encode() for c in range(20)]})}
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        labels = {b"fine_labels": y, b"coarse_labels": fine_to_coarse[y]}
        members[name] = _pickle(_cifar_batch(name, x, labels, np.arange(len(y))))
    return _write_tar_gz(Path(out_dir) / CIFAR100.filename, CIFAR100.folder, members)


def write_mnist(out_dir: PathLike, *, train: int = 500, test: int = 100,
                seed: int = 0) -> Path:
    """Writes ``out_dir``/mnist.npz (uint8 (N, 28, 28) images, uint8 labels); returns its path."""
    _check_sizes(train, test)
    rng = np.random.default_rng(seed)
    patterns = _patterns(rng, (len(MNIST_CLASSES), 7, 7), 4, ink=True)
    train_x, train_y = _sample(rng, patterns, train)
    test_x, test_y = _sample(rng, patterns, test)
    arrays = {"x_train": train_x, "y_train": train_y.astype(np.uint8),
              "x_test": test_x, "y_test": test_y.astype(np.uint8)}
    return _write_npz(Path(out_dir) / MNIST.filename, arrays)


WRITERS: dict[str, Callable[..., Path]] = {
    "cifar10": write_cifar10, "cifar100": write_cifar100, "mnist": write_mnist}


def _check_sizes(train: int, test: int) -> None:
    if train < 1 or test < 1:
        raise ValueError(f"train and test need at least one image each (got {train}, {test})")


def _patterns(rng: np.random.Generator, coarse_shape: tuple[int, ...], scale: int,
              ink: bool = False) -> np.ndarray:
    """One smooth uint8 pattern per class: random blocks blown up ``scale`` times.

    ``ink`` makes them black-and-white strokes on black, like handwritten digits.
    """
    blocks = (rng.random(coarse_shape) > 0.6) * 255 if ink else rng.integers(0, 256, coarse_shape)
    blocks = blocks.repeat(scale, axis=1).repeat(scale, axis=2)
    return blocks.astype(np.uint8)


def _sample(rng: np.random.Generator, patterns: np.ndarray,
            count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` noisy images of balanced, shuffled classes, and their int64 labels.

    Blending in another class's pattern, noise, a brightness shift and a translation
    keep the task from being trivial: a linear model gets roughly 60-90 %, not 100 %.
    """
    labels = rng.permutation(np.arange(count) % len(patterns)).astype(np.int64)
    others = rng.integers(0, len(patterns), count)
    images = ((1 - _BLEND) * patterns[labels].astype(np.float32)
              + _BLEND * patterns[others].astype(np.float32))
    images += rng.normal(0, _NOISE, images.shape)
    images += rng.normal(0, _BRIGHTNESS, (count,) + (1,) * (images.ndim - 1))
    shifts = rng.integers(-_SHIFT, _SHIFT + 1, (count, 2))
    for image, shift in zip(images, shifts):
        image[...] = np.roll(image, tuple(shift), axis=(0, 1))
    return np.clip(images, 0, 255).astype(np.uint8), labels


def _cifar_batch(batch_label: str, images: np.ndarray, labels: dict[bytes, np.ndarray],
                 numbers: np.ndarray) -> dict[bytes, object]:
    """A batch dict as the real files hold it: bytes keys, plain int label lists."""
    return {b"batch_label": batch_label.encode(),
            **{key: [int(v) for v in values] for key, values in labels.items()},
            b"data": images_to_rows(images),
            b"filenames": [f"synth_{n:05d}.png".encode() for n in numbers]}


def _pickle(content: dict) -> bytes:
    # Protocol 4 stores bytes as they are; Python 3's protocol 2 (the real files' number)
    # would spell them as latin-1 text, half again as large and slow to compress.
    return pickle.dumps(content, protocol=4)


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary file next to ``path`` that becomes ``path`` only when writing succeeded."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    try:
        yield part
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)


def _write_tar_gz(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    with _atomic(path) as part, open(part, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as compressed, \
            tarfile.open(fileobj=compressed, mode="w", format=tarfile.GNU_FORMAT) as tar:
        directory = tarfile.TarInfo(folder)
        directory.type, directory.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(directory)
        for name, content in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size, info.mode = len(content), 0o644
            tar.addfile(info, io.BytesIO(content))
    return path


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    # np.savez stamps entries with the current time; fixed ZipInfo times keep the bytes stable
    with _atomic(path) as part, zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=_ZIP_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, array, allow_pickle=False)
    return path
