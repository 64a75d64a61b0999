"""Synthesised data sets are the real files' formats, reproducible, and learnable."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest

from swarm.data import load_dataset, sha256_of, synth


def test_cifar10_tarball_has_the_real_layout(files):
    with tarfile.open(files["cifar10"], "r:gz") as tar:
        names = set(tar.getnames())
        meta = pickle.loads(tar.extractfile("cifar-10-batches-py/batches.meta").read(),
                            encoding="bytes")
        batch = pickle.loads(tar.extractfile("cifar-10-batches-py/data_batch_1").read(),
                             encoding="bytes")
    assert names == {"cifar-10-batches-py", "cifar-10-batches-py/batches.meta",
                     "cifar-10-batches-py/test_batch",
                     *(f"cifar-10-batches-py/data_batch_{i}" for i in range(1, 6))}
    assert len(meta[b"label_names"]) == 10 and all(isinstance(n, bytes) for n in meta[b"label_names"])
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape[1] == 3072
    assert isinstance(batch[b"labels"], list) and isinstance(batch[b"labels"][0], int)


def test_cifar100_tarball_has_the_real_layout(files):
    with tarfile.open(files["cifar100"], "r:gz") as tar:
        names = set(tar.getnames())
        meta = pickle.loads(tar.extractfile("cifar-100-python/meta").read(), encoding="bytes")
        train = pickle.loads(tar.extractfile("cifar-100-python/train").read(), encoding="bytes")
    assert names == {"cifar-100-python", *(f"cifar-100-python/{n}" for n in ("meta", "train", "test"))}
    assert len(meta[b"fine_label_names"]) == 100 and len(meta[b"coarse_label_names"]) == 20
    assert {b"data", b"fine_labels", b"coarse_labels", b"filenames", b"batch_label"} == set(train)
    # five fine classes per coarse class
    assert [c for f, c in zip(train[b"fine_labels"], train[b"coarse_labels"]) if c != f // 5] == []


def test_mnist_npz_has_the_real_keys(files):
    with np.load(files["mnist"], allow_pickle=False) as npz:
        assert sorted(npz.files) == ["x_test", "x_train", "y_test", "y_train"]
        assert npz["x_train"].dtype == np.uint8 and npz["x_train"].shape[1:] == (28, 28)
        assert npz["y_train"].dtype == np.uint8 and npz["y_train"].max() <= 9


@pytest.mark.parametrize("name", sorted(synth.WRITERS))
def test_same_seed_same_bytes(tmp_path, name):
    write = synth.WRITERS[name]
    first = sha256_of(write(tmp_path / "a", train=20, test=10, seed=4))
    assert sha256_of(write(tmp_path / "b", train=20, test=10, seed=4)) == first
    assert sha256_of(write(tmp_path / "c", train=20, test=10, seed=5)) != first


@pytest.mark.parametrize("name, least", [("cifar10", 0.5), ("mnist", 0.4), ("cifar100", 0.1)])
def test_a_simple_model_beats_chance(tmp_path, name, least):
    """Nearest class mean on raw pixels: chance is 0.1 (0.01 for CIFAR-100)."""
    dataset = load_dataset(name, synth.WRITERS[name](tmp_path, train=600, test=200, seed=2))
    train = dataset.train_x.reshape(len(dataset.train_x), -1).astype(np.float32)
    test = dataset.test_x.reshape(len(dataset.test_x), -1).astype(np.float32)
    present = np.unique(dataset.train_y)
    means = np.stack([train[dataset.train_y == c].mean(axis=0) for c in present])
    distances = (means ** 2).sum(axis=1) - 2 * test @ means.T  # + |test|^2, the same per row
    accuracy = np.mean(present[distances.argmin(axis=1)] == dataset.test_y)
    assert accuracy > least


def test_nothing_is_left_behind_when_writing_fails(tmp_path):
    with pytest.raises(ValueError, match="at least one image"):
        synth.write_mnist(tmp_path, train=0)
    assert list(tmp_path.iterdir()) == []
