"""Data sets for swarm jobs: loaders for the standard files, synthetic stand-ins, partitions.

- ``load_cifar10``, ``load_cifar100``, ``load_mnist``: the standard files
  (cifar-10-python.tar.gz, cifar-100-python.tar.gz, mnist.npz) from ``$DATA_DIR``, a
  directory, a file or a URL, SHA-256 checked when a checksum is given (``sources``).
- ``load_digits``: scikit-learn's bundled digits, for tests that need real data offline.
- ``synth``: small learnable data sets written in the standard formats.
- ``partition`` / ``node_seed``: which samples each node trains on, and its own seed.

Every failure to load is one ``DataError`` line naming the file and the problem.
"""

from __future__ import annotations

from collections.abc import Callable

from . import synth
from .cifar import load_cifar10, load_cifar100
from .datasets import Dataset, load_digits
from .errors import DataError
from .mnist import load_mnist
from .partition import PARTITION_SCHEMES, node_seed, partition, partition_all
from .sources import Source, sha256_of

LOADERS: dict[str, Callable[..., Dataset]] = {
    "cifar10": load_cifar10, "cifar100": load_cifar100, "mnist": load_mnist,
    "digits": load_digits}


def load_dataset(name: str, source: Source = None, **options: object) -> Dataset:
    """The data set called ``name`` (a key of LOADERS) from ``source``, with its loader's options.

    ``digits`` is bundled with scikit-learn and takes no source.
    """
    loader = LOADERS.get(name)
    if loader is None:
        raise DataError(f"unknown data set {name!r}; choose from {', '.join(LOADERS)}")
    if name == "digits":
        if source is not None:
            raise DataError("digits: the digits come with scikit-learn and take no source")
        return loader(**options)
    return loader(source, **options)


__all__ = ["DataError", "Dataset", "LOADERS", "PARTITION_SCHEMES", "load_cifar10",
           "load_cifar100", "load_dataset", "load_digits", "load_mnist", "node_seed",
           "partition", "partition_all", "sha256_of", "synth"]
