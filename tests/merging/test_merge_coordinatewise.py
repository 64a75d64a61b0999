"""mean, coordmedian and trimmedmean against per-coordinate loops written here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from swarm.merging import get_merge

NS = (1, 2, 3, 5, 8)
DTYPES = (np.float32, np.float64)


def data(n: int, d: int, dtype, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) * rng.uniform(0.1, 10.0, size=(n, 1))).astype(dtype)
    x[:, :3] = np.round(x[:, :3])  # some coordinates with tied values
    w = rng.integers(1, 101, size=n).astype(np.float64)
    return x, w


def check_close(got: np.ndarray, want: np.ndarray, dtype) -> None:
    assert got.dtype == dtype and got.shape == want.shape
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol * 1e-3)


def ref_mean(x, w):
    return sum(float(w[i]) * x[i].astype(np.float64) for i in range(len(w))) / math.fsum(w)


def ref_lower_median(values, w) -> float:
    """Smallest value (ties by index) at which the weight so far reaches half the total."""
    ranked = sorted(range(len(values)), key=lambda i: (values[i], i))
    total, running = math.fsum(w), 0.0
    for i in ranked:
        running += w[i]
        if running >= total / 2:
            return values[i]
    raise AssertionError("unreachable")


def ref_median(values, w) -> float:
    """Midpoint of the lower median and the upper one (the lower median of the negated values)."""
    lower = float(ref_lower_median(values, w))
    upper = -float(ref_lower_median([-v for v in values], w))
    return (lower + upper) / 2


def ref_trimmed(values, w, ratio: float) -> float:
    n = len(values)
    t = math.floor(ratio * n)
    kept = sorted(range(n), key=lambda i: (values[i], i))[t:n - t]
    return math.fsum(w[i] * float(values[i]) for i in kept) / math.fsum(w[i] for i in kept)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NS)
def test_mean_is_the_weighted_mean(n, dtype):
    x, w = data(n, 41, dtype, seed=n)
    check_close(get_merge("mean")(x, w), ref_mean(x, w), dtype)


def test_mean_of_one_update_is_that_update():
    x = np.random.default_rng(1).normal(size=(1, 100))
    assert np.array_equal(get_merge("mean")(x, np.array([37.0])), x[0])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NS)
def test_coordmedian_is_the_weighted_median(n, dtype):
    x, w = data(n, 41, dtype, seed=10 + n)
    want = np.array([ref_median(x[:, j].tolist(), w.tolist()) for j in range(x.shape[1])])
    got = get_merge("coordmedian")(x, w)
    assert got.dtype == dtype
    assert np.array_equal(got, want.astype(dtype))  # the same float64 midpoint, exactly


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NS)
def test_coordmedian_with_equal_weights_is_the_median(n, dtype):
    # Equal weights take the selection path (np.partition), not the weighted sort.
    x, _ = data(n, 41, dtype, seed=20 + n)
    w = np.full(n, 7.0)
    want = np.array([ref_median(x[:, j].tolist(), w.tolist()) for j in range(x.shape[1])])
    assert np.array_equal(get_merge("coordmedian")(x, w), want.astype(dtype))


def test_coordmedian_definition_on_small_cases():
    median = get_merge("coordmedian")
    col = lambda *v: np.array(v, dtype=np.float64)[:, None]  # noqa: E731
    assert median(col(3, 1, 2), np.ones(3))[0] == 2
    assert median(col(4, 1, 3, 2), np.ones(4))[0] == 2.5         # mean of the middle two
    assert median(col(1, 5), np.ones(2))[0] == 3                 # two: their mean, not the min
    assert median(col(1, 2, 3), col(1, 1, 5)[:, 0])[0] == 3       # heavy participant wins
    assert median(col(1, 2, 3, 4), col(3, 1, 1, 1)[:, 0])[0] == 1.5  # exactly half: midpoint
    assert median(col(5.0), np.array([7.0]))[0] == 5


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n,ratio", [  # leaving nothing is a bad-input test
    (n, r) for n in NS for r in (0.0, 0.1, 0.2, 0.34, 0.5) if n - 2 * math.floor(r * n) >= 1])
def test_trimmedmean_is_the_weighted_mean_of_the_kept(n, ratio, dtype):
    x, w = data(n, 41, dtype, seed=20 + n)
    want = np.array([ref_trimmed(x[:, j].tolist(), w.tolist(), ratio) for j in range(x.shape[1])])
    check_close(get_merge("trimmedmean", trim_ratio=ratio)(x, w), want, dtype)


def test_trimmedmean_cuts_floor_of_ratio_times_n_from_each_end():
    x = np.array([[0.0], [1.0], [2.0], [3.0], [100.0]])
    # floor(0.2 * 5) = 1 from each end: mean of 1, 2, 3
    assert get_merge("trimmedmean")(x, np.ones(5))[0] == 2.0
    # floor(0.19 * 5) = 0: nothing cut
    assert get_merge("trimmedmean", trim_ratio=0.19)(x, np.ones(5))[0] == pytest.approx(21.2)


@pytest.mark.parametrize("name", ("mean", "coordmedian", "trimmedmean"))
def test_coordinate_wise_methods_never_allreduce(name):
    def refuse(_):
        raise AssertionError("a coordinate-wise method called allreduce")

    x, w = data(5, 9, np.float64, seed=3)
    method = get_merge(name)
    assert method.coordinate_wise
    method(x, w, refuse)
