"""The registry, the protocol, and the ValueErrors for bad inputs and parameters."""

from __future__ import annotations

import numpy as np
import pytest

from swarm.merging import MERGE_METHODS, MergeMethod, get_merge, no_allreduce

X = np.arange(12, dtype=np.float64).reshape(4, 3)
W = np.ones(4)


def test_registry_names_and_flags():
    assert MERGE_METHODS == ("mean", "coordmedian", "trimmedmean", "geomedian", "krum",
                             "centeredclipping")
    for name in MERGE_METHODS:
        method = get_merge(name)
        assert isinstance(method, MergeMethod)
        assert method.name == name
        assert method.coordinate_wise == (name in ("mean", "coordmedian", "trimmedmean"))
        assert method(X, W, no_allreduce).shape == (3,)


def test_names_ignore_case_and_separators():
    assert get_merge("Centered_Clipping").name == "centeredclipping"
    assert get_merge(" GeoMedian ").name == "geomedian"
    assert get_merge("trimmed-mean", trim_ratio=0.1).trim_ratio == 0.1


def test_no_allreduce_is_the_identity():
    v = np.arange(3.0)
    assert no_allreduce(v) is v


def test_unknown_name():
    with pytest.raises(ValueError, match=r"unknown merge method 'fedprox'; allowed: mean, "
                                         r"coordmedian, trimmedmean, geomedian, krum, "
                                         r"centeredclipping"):
        get_merge("fedprox")


@pytest.mark.parametrize("name,params,message", [
    ("mean", {"trim_ratio": 0.1}, r"'mean' has no parameter 'trim_ratio'; allowed: none"),
    ("krum", {"k": 2}, r"'krum' has no parameter 'k'; allowed: f, m"),
    ("trimmedmean", {"trim_ratio": 0.6}, r"trimmedmean: trim_ratio must be .* \[0.0, 0.5\]"),
    ("trimmedmean", {"trim_ratio": -0.1}, r"trim_ratio must be"),
    ("trimmedmean", {"trim_ratio": float("nan")}, r"trim_ratio must be a finite number"),
    ("trimmedmean", {"trim_ratio": "0.2"}, r"trim_ratio must be .* got '0.2'"),
    ("geomedian", {"max_iter": 0}, r"geomedian: max_iter must be an integer >= 1, got 0"),
    ("geomedian", {"max_iter": 2.5}, r"max_iter must be an integer"),
    ("geomedian", {"max_iter": True}, r"max_iter must be an integer"),
    ("geomedian", {"tol": -1e-3}, r"geomedian: tol must be"),
    ("geomedian", {"eps": 0.0}, r"geomedian: eps must be a finite number in \(0.0, inf\)"),
    ("geomedian", {"init": "zero"}, r"geomedian: init must be one of coordmedian, mean"),
    ("krum", {"f": -1}, r"krum: f must be an integer >= 0, got -1"),
    ("krum", {"m": 0}, r"krum: m must be an integer >= 1, got 0"),
    ("centeredclipping", {"tau": 0.0}, r"centeredclipping: tau must be"),
    ("centeredclipping", {"tau": float("inf")}, r"centeredclipping: tau must be"),
    ("centeredclipping", {"iters": 0}, r"centeredclipping: iters must be an integer >= 1"),
    ("centeredclipping", {"center": "zero"}, r"center must be one of coordmedian, mean"),
])
def test_bad_parameters(name, params, message):
    with pytest.raises(ValueError, match=message):
        get_merge(name, **params)


@pytest.mark.parametrize("name", MERGE_METHODS)
@pytest.mark.parametrize("updates,weights,message", [
    (np.zeros(3), np.ones(1), r"updates must be a 2-D array .* got shape \(3,\)"),
    (np.zeros((2, 3, 1)), np.ones(2), r"updates must be a 2-D array .* got shape \(2, 3, 1\)"),
    (np.zeros((2, 3), dtype=np.int64), np.ones(2), r"updates must have a floating dtype, got int64"),
    (np.zeros((0, 3)), np.ones(0), r"no updates to merge: n must be at least 1"),
    (np.zeros((2, 3)), np.ones(3), r"weights must have shape \(n,\) = \(2,\).* got shape \(3,\)"),
    (np.zeros((2, 3)), np.ones((2, 1)), r"weights must have shape \(n,\) = \(2,\)"),
    (np.zeros((2, 3)), np.array([1.0, 0.0]), r"weights must be positive, got \[1.0, 0.0\]"),
    (np.zeros((2, 3)), np.array([1.0, -2.0]), r"weights must be positive"),
    (np.zeros((2, 3)), np.array([1.0, np.nan]), r"weights must be finite, got \[1.0, nan\]"),
    (np.zeros((2, 3)), np.array([np.inf, 1.0]), r"weights must be finite"),
    (np.zeros((2, 3)), np.array(["a", "b"]), r"weights must be numbers"),
])
def test_bad_inputs(name, updates, weights, message):
    with pytest.raises(ValueError, match=message):
        get_merge(name)(updates, weights)


def test_trimmedmean_that_would_leave_nothing():
    with pytest.raises(ValueError, match=r"trimmedmean: trim_ratio=0.5 cuts 1 of n=2 values "
                                         r"from each end, leaving none"):
        get_merge("trimmedmean", trim_ratio=0.5)(np.zeros((2, 3)), np.ones(2))
    assert get_merge("trimmedmean", trim_ratio=0.5)(X[:3], W[:3]).shape == (3,)  # odd n: median


@pytest.mark.parametrize("n", (1, 2, 3, 4))
def test_krum_with_too_few_for_an_explicit_f(n):
    calls = []
    with pytest.raises(ValueError, match=rf"krum: tolerating f=1 Byzantine participants "
                                         rf"needs n > 2f \+ 2 = 4, got n={n}"):
        get_merge("krum", f=1)(X[:n], W[:n], calls.append)
    assert calls == []  # refused before any allreduce, so no owner is left waiting


def test_allreduce_returning_the_wrong_length():
    with pytest.raises(ValueError, match=r"allreduce returned shape \(2,\) for a partial of "
                                         r"shape \(4,\)"):
        get_merge("geomedian")(X, W, lambda v: v[:2])


@pytest.mark.parametrize("name", MERGE_METHODS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_merging_into_out_gives_the_same_bits_in_place(name, dtype):
    # The exchange merges straight into the round's result: no shard-sized copy after.
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 2_000_001 // 5)).astype(dtype)  # several column blocks
    w = np.array([1.0, 2.0, 1.0, 3.0, 1.0])
    fresh = get_merge(name)(x, w)
    out = np.full(x.shape[1], np.nan, dtype=dtype)
    assert get_merge(name)(x, w, out=out) is out
    assert out.tobytes() == fresh.tobytes()


@pytest.mark.parametrize("name", MERGE_METHODS)
def test_out_of_another_dtype_or_length_is_refused(name):
    with pytest.raises(ValueError, match="out must have shape"):
        get_merge(name)(X, W, out=np.empty(3, dtype=np.float32))
    with pytest.raises(ValueError, match="out must have shape"):
        get_merge(name)(X, W, out=np.empty(4))
