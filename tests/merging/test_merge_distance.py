"""geomedian, krum and centeredclipping against whole-vector NumPy written here."""

from __future__ import annotations


import numpy as np
import pytest

from swarm.merging import get_merge

NS = (1, 2, 3, 5, 8)
DTYPES = (np.float32, np.float64)


def data(n: int, d: int, dtype, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(n, d)) + rng.normal(size=(n, 1)) * 3).astype(dtype)
    w = rng.integers(1, 101, size=n).astype(np.float64)
    return x, w


def check_close(got: np.ndarray, want: np.ndarray, dtype, rtol64: float = 1e-10) -> None:
    assert got.dtype == dtype and got.shape == want.shape
    rtol = 1e-5 if dtype == np.float32 else rtol64
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rtol, atol=rtol)


def ref_lower_median(values, w) -> float:
    ranked = sorted(range(len(values)), key=lambda i: (values[i], i))
    total, running = sum(w), 0.0
    for i in ranked:
        running += w[i]
        if running >= total / 2:
            return float(values[i])
    raise AssertionError("unreachable")


def ref_coordmedian(x, w) -> np.ndarray:
    return np.array([ref_lower_median(x[:, j].tolist(), w.tolist()) for j in range(x.shape[1])])


def objective(x, w, z) -> float:
    return float(np.sum(w * np.linalg.norm(x - z, axis=1)))


# --- geomedian ------------------------------------------------------------------------

def ref_weiszfeld(x, w, max_iter=10, tol=1e-6, eps=1e-8, start=None) -> np.ndarray:
    x = x.astype(np.float64)
    z = ref_coordmedian(x, w) if start is None else start
    for step in range(max_iter):
        b = w / np.maximum(eps, np.linalg.norm(x - z, axis=1))
        z_new = (b[:, None] * x).sum(axis=0) / b.sum()
        moved = np.linalg.norm(z_new - z)
        z = z_new
        if moved <= tol * np.linalg.norm(z):
            break
    return z


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NS)
def test_geomedian_follows_weiszfeld(n, dtype):
    x, w = data(n, 33, dtype, seed=n)
    check_close(get_merge("geomedian")(x, w), ref_weiszfeld(x, w), dtype)
    mean = (w[:, None] * x.astype(np.float64)).sum(axis=0) / w.sum()
    check_close(get_merge("geomedian", init="mean", max_iter=4, tol=0.0)(x, w),
                ref_weiszfeld(x, w, max_iter=4, tol=0.0, start=mean), dtype)


@pytest.mark.parametrize("n", (3, 4, 5, 8))
def test_geomedian_minimises_the_weighted_distance_sum(n):
    x, w = data(n, 20, np.float64, seed=100 + n)
    z = get_merge("geomedian", max_iter=2000, tol=1e-14)(x, w).astype(np.float64)
    best = objective(x, w, z)
    rng = np.random.default_rng(n)
    candidates = [*x, (w[:, None] * x).sum(0) / w.sum(), np.median(x, axis=0)]
    candidates += [z + 1e-3 * rng.normal(size=z.shape) for _ in range(50)]
    # eps-smoothing stops a few eps short when the median is one of the updates
    assert all(best <= objective(x, w, c) * (1 + 1e-9) for c in candidates)
    gaps = np.linalg.norm(z - x, axis=1)
    if gaps.min() > 1e-6:
        # first-order condition: the weighted unit vectors towards the updates cancel out
        unit = (z - x) / gaps[:, None]
        assert np.linalg.norm((w[:, None] * unit).sum(axis=0)) < 1e-6 * w.sum()


def test_geomedian_iterations_and_allreduce_lengths():
    x, w = data(5, 10, np.float64, seed=7)
    sizes = []

    def record(v):
        sizes.append(v.size)
        return v

    get_merge("geomedian", max_iter=6, tol=0.0)(x, w, record)
    assert sizes == [5] + [5 + 2] * 5  # the start's distances, then one per step but the last


# --- krum -----------------------------------------------------------------------------

def ref_krum(x, w, f, m) -> np.ndarray:
    n = len(x)
    x64 = x.astype(np.float64)
    scores = []
    for i in range(n):
        dists = sorted(float(np.sum((x64[i] - x64[j]) ** 2)) for j in range(n) if j != i)
        scores.append(sum(dists[:n - f - 2]))
    chosen = sorted(sorted(range(n), key=lambda i: (scores[i], i))[:m])
    ws = w[chosen]
    return (ws[:, None] * x64[chosen]).sum(axis=0) / ws.sum()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", (3, 5, 8))
@pytest.mark.parametrize("m", (1, 2, 3))
def test_krum_matches_explicit_scores(n, m, dtype):
    x, w = data(n, 27, dtype, seed=30 + n + m)
    f = max(0, (n - 3) // 2)
    check_close(get_merge("krum", m=m)(x, w), ref_krum(x, w, f, min(m, n)), dtype)
    if n > 4:
        check_close(get_merge("krum", f=1, m=m)(x, w), ref_krum(x, w, 1, m), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_krum_returns_one_update_exactly(dtype):
    x, w = data(8, 27, dtype, seed=5)
    got = get_merge("krum")(x, w)
    assert any(np.array_equal(got, row) for row in x)


def test_krum_ties_go_to_the_lower_index():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0]])
    # 0..3 tie on every score; the centre 4 wins, then 0 and 1 by index
    assert np.array_equal(get_merge("krum", f=0)(x, np.ones(5)), x[4])
    assert np.allclose(get_merge("krum", f=0, m=3)(x, np.ones(5)), (x[0] + x[1] + x[4]) / 3)
    y = x[:4]
    assert np.array_equal(get_merge("krum", f=0)(y, np.ones(4)), y[0])


@pytest.mark.parametrize("n", (1, 2))
def test_krum_default_f_falls_back_to_the_mean_below_three(n):
    x, w = data(n, 12, np.float64, seed=n)
    want = (w[:, None] * x).sum(axis=0) / w.sum()
    np.testing.assert_allclose(get_merge("krum")(x, w), want, rtol=1e-12)


def test_krum_allreduces_the_upper_triangle_once():
    x, w = data(6, 10, np.float64, seed=1)
    sizes = []
    get_merge("krum", m=2)(x, w, lambda v: sizes.append(v.size) or v)
    assert sizes == [15]


# --- centeredclipping -----------------------------------------------------------------

def ref_centered_clipping(x, w, tau=None, iters=3, center="coordmedian") -> np.ndarray:
    x = x.astype(np.float64)
    v = ref_coordmedian(x, w) if center == "coordmedian" else (w[:, None] * x).sum(0) / w.sum()
    for _ in range(iters):
        norms = np.linalg.norm(x - v, axis=1)
        radius = ref_lower_median(norms.tolist(), w.tolist()) if tau is None else tau
        scale = np.array([1.0 if r <= radius else radius / r for r in norms])
        v = v + ((w * scale)[:, None] * (x - v)).sum(axis=0) / w.sum()
    return v


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("params", ({}, {"tau": 2.0, "iters": 2}, {"center": "mean", "iters": 1}))
def test_centered_clipping_matches_the_update_rule(n, params, dtype):
    x, w = data(n, 29, dtype, seed=50 + n)
    check_close(get_merge("centeredclipping", **params)(x, w),
                ref_centered_clipping(x, w, **params), dtype)


def test_centered_clipping_allreduces_once_per_iteration():
    x, w = data(4, 10, np.float64, seed=2)
    sizes = []
    get_merge("centeredclipping", iters=2)(x, w, lambda v: sizes.append(v.size) or v)
    assert sizes == [4, 4]


# --- all of them ----------------------------------------------------------------------

@pytest.mark.parametrize("name", ("mean", "coordmedian", "trimmedmean", "geomedian", "krum",
                                  "centeredclipping"))
@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_and_leaves_inputs_alone(name, dtype):
    x, w = data(8, 300, dtype, seed=9)
    x.setflags(write=False)  # the SL node hands in read-only views of received bytes
    before = x.copy()
    method = get_merge(name)
    first, second = method(x, w), method(x.copy(), w.copy())
    assert first.tobytes() == second.tobytes()
    assert np.array_equal(x, before)


@pytest.mark.parametrize("name", ("mean", "coordmedian", "trimmedmean", "geomedian", "krum",
                                  "centeredclipping"))
def test_empty_shard(name):
    got = get_merge(name)(np.zeros((5, 0), dtype=np.float32), np.ones(5))
    assert got.shape == (0,) and got.dtype == np.float32
