"""Partitions give every node a disjoint share, together covering every sample once,
distributed over the labels as each scheme defines; node seeds are derived as documented."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from swarm.data import PARTITION_SCHEMES, node_seed, partition, partition_all

# 10 classes of unequal sizes (100, 150, ..., 550), in a shuffled order
LABELS = np.random.default_rng(7).permutation(np.repeat(np.arange(10), np.arange(100, 600, 50)))


def _class_shares(labels: np.ndarray, indices: np.ndarray, num_classes: int = 10) -> np.ndarray:
    counts = np.bincount(labels[indices], minlength=num_classes)
    return counts / max(counts.sum(), 1)


@pytest.mark.parametrize("scheme", PARTITION_SCHEMES)
@pytest.mark.parametrize("num_nodes", [1, 3, 7])
def test_nodes_are_disjoint_and_cover_every_sample(scheme, num_nodes):
    parts = partition_all(LABELS, num_nodes, scheme=scheme, alpha=0.3, seed=5)
    joined = np.concatenate(parts)
    np.testing.assert_array_equal(np.sort(joined), np.arange(len(LABELS)))
    for node, part in enumerate(parts):
        assert part.dtype == np.int64 and np.all(np.diff(part) > 0)
        np.testing.assert_array_equal(
            partition(LABELS, num_nodes, node, scheme=scheme, alpha=0.3, seed=5), part)


def test_iid_nodes_have_the_global_class_proportions():
    parts = partition_all(LABELS, 4, scheme="iid", seed=1)
    sizes = [len(part) for part in parts]
    assert max(sizes) - min(sizes) <= 1
    global_counts = np.bincount(LABELS)
    for part in parts:
        counts = np.bincount(LABELS[part], minlength=10)
        assert np.all(np.abs(counts - global_counts / 4) <= 1)
    assert not np.array_equal(parts[0], partition(LABELS, 4, 0, scheme="iid", seed=2))


def test_label_scheme_deals_the_sorted_classes_round_robin():
    labels = np.array([9, 3, 12, 3, 40, 7, 9, 12, 40, 40, 5])  # classes 3 5 7 9 12 40
    expected = [{3, 9}, {5, 12}, {7, 40}]
    for node, classes in enumerate(expected):
        assert set(labels[partition(labels, 3, node, scheme="label")]) == classes
    for node in range(3):
        assert set(LABELS[partition(LABELS, 3, node, scheme="label")]) == set(range(node, 10, 3))
    with pytest.raises(ValueError, match=r"at least as many classes as nodes \(6 classes, 7 nodes\)"):
        partition(labels, 7, 0, scheme="label")


def test_dirichlet_small_alpha_is_skewed_and_large_alpha_near_iid():
    global_shares = _class_shares(LABELS, np.arange(len(LABELS)))

    def largest_gap(alpha: float) -> float:
        parts = partition_all(LABELS, 5, scheme="dirichlet", alpha=alpha, seed=3)
        return max(np.abs(_class_shares(LABELS, part) - global_shares).max() for part in parts)

    skewed = partition_all(LABELS, 5, scheme="dirichlet", alpha=0.05, seed=3)
    assert np.mean([_class_shares(LABELS, part).max() for part in skewed]) > 0.4  # globally 0.17
    assert largest_gap(0.05) > 0.3
    assert largest_gap(1000.0) < 0.03


def test_dirichlet_same_seed_same_split():
    first = partition_all(LABELS, 4, scheme="dirichlet", alpha=0.5, seed=11)
    again = partition_all(LABELS, 4, scheme="dirichlet", alpha=0.5, seed=11)
    other = partition_all(LABELS, 4, scheme="dirichlet", alpha=0.5, seed=12)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(len(a) != len(b) or not np.array_equal(a, b) for a, b in zip(first, other))


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="unknown partition scheme 'stripes'"):
        partition(LABELS, 2, 0, scheme="stripes")
    with pytest.raises(ValueError, match=r"node_index must be in 0\.\.1, not 2"):
        partition(LABELS, 2, 2)
    with pytest.raises(ValueError, match="alpha must be positive"):
        partition(LABELS, 2, 0, scheme="dirichlet", alpha=0)
    with pytest.raises(ValueError, match="num_nodes must be at least 1"):
        partition_all(LABELS, 0)


def test_node_seed_is_the_documented_hash():
    assert node_seed(0, 1) == int.from_bytes(hashlib.sha256(b"0:1").digest()[:4], "big")
    seeds = {node_seed(42, node) for node in range(100)}
    assert len(seeds) == 100 and all(0 <= seed < 2**32 for seed in seeds)
    assert node_seed(42, 3) == node_seed(42, 3) != node_seed(43, 3)
