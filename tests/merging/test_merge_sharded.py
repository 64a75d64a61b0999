"""Sharded execution: k owners, each merging one slice, equal the whole-vector merge.

The harness runs every owner in its own thread; allreduce is a barrier at which every
owner posts its partial and then sums all of them in owner order, as an SL node does.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from swarm.merging import get_merge

NS = (1, 2, 3, 5, 8)
VARIANTS = [
    ("mean", {}),
    ("coordmedian", {}),
    ("trimmedmean", {}),
    ("trimmedmean", {"trim_ratio": 0.4}),
    ("geomedian", {}),
    ("geomedian", {"init": "mean", "max_iter": 5}),
    ("krum", {}),
    ("krum", {"m": 3}),
    ("krum", {"f": 1, "m": 2}),
    ("centeredclipping", {}),
    ("centeredclipping", {"tau": 1.5, "center": "mean", "iters": 2}),
]


def shard_bounds(d: int, k: int, seed: int) -> list[tuple[int, int]]:
    """k contiguous slices of 0..d of uneven sizes; for k >= 3 one of them is empty."""
    rng = np.random.default_rng(seed)
    full = k - 1 if k >= 3 else k  # how many non-empty slices
    cuts = sorted(rng.choice(np.arange(1, d), size=full - 1, replace=False).tolist())
    sizes = np.diff([0, *cuts, d]).tolist()
    if k >= 3:
        sizes.insert(int(rng.integers(0, k)), 0)
    edges = np.cumsum([0, *sizes]).tolist()
    return list(zip(edges[:-1], edges[1:]))


def run_sharded(method, x: np.ndarray, w: np.ndarray,
                bounds: list[tuple[int, int]]) -> tuple[np.ndarray, list[list[int]]]:
    """Runs one owner per shard in threads; returns the concatenated result and, per
    owner, the lengths of the vectors it allreduced."""
    k = len(bounds)
    barrier = threading.Barrier(k, timeout=20)
    posted: list[np.ndarray | None] = [None] * k
    calls: list[list[int]] = [[] for _ in range(k)]
    results: list[np.ndarray | None] = [None] * k
    errors: list[BaseException] = []

    def owner(rank: int) -> None:
        def allreduce(partial: np.ndarray) -> np.ndarray:
            calls[rank].append(partial.size)
            posted[rank] = np.array(partial, dtype=np.float64)
            barrier.wait()
            total = np.zeros_like(posted[rank])
            for part in posted:  # owner order, on every owner
                assert part.shape == total.shape, "owners allreduced different lengths"
                total = total + part
            barrier.wait()  # nobody posts the next partial before all have summed
            return total

        a, b = bounds[rank]
        try:
            results[rank] = method(np.ascontiguousarray(x[:, a:b]), w, allreduce)
        except BaseException as error:  # noqa: BLE001 - reported by the test
            errors.append(error)
            barrier.abort()

    threads = [threading.Thread(target=owner, args=(r,)) for r in range(k)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return np.concatenate(results), calls


CASES = [(name, params, n) for name, params in VARIANTS for n in NS
         if not (name == "krum" and n <= 2 * params.get("f", -1) + 2)]  # f=1 needs n > 4


@pytest.mark.parametrize("dtype", (np.float32, np.float64))
@pytest.mark.parametrize("name,params,n", CASES, ids=[f"{a}-{b}-n{c}" for a, b, c in CASES])
def test_sharded_equals_whole(name, params, n, dtype):
    rng = np.random.default_rng(n)
    d = 61
    x = (rng.normal(size=(n, d)) + rng.normal(size=(n, 1))).astype(dtype)
    w = rng.integers(1, 101, size=n).astype(np.float64)
    method = get_merge(name, **params)
    whole = method(x, w)
    for k in range(1, 6):
        bounds = shard_bounds(d, k, seed=k)
        first, calls = run_sharded(method, x, w, bounds)
        again, _ = run_sharded(method, x, w, bounds)
        assert first.dtype == dtype and first.shape == (d,)
        np.testing.assert_allclose(first, whole, rtol=1e-6, atol=1e-6)
        assert first.tobytes() == again.tobytes(), f"k={k}: two runs differ"
        assert all(c == calls[0] for c in calls), f"k={k}: owners allreduced differently"
        if method.coordinate_wise:
            assert calls[0] == []
            assert first.tobytes() == whole.tobytes()  # per coordinate, nothing to differ
        elif n > 2 or name != "krum":
            assert calls[0], "a distance-based method merged without an allreduce"


def test_harness_splits_unevenly_with_an_empty_shard():
    for k in range(1, 6):
        bounds = shard_bounds(61, k, seed=k)
        assert len(bounds) == k and bounds[0][0] == 0 and bounds[-1][1] == 61
        assert all(a <= b == c for (a, b), (c, _) in zip(bounds, bounds[1:] + [(61, 61)]))
        sizes = [b - a for a, b in bounds]
        assert (0 in sizes) == (k >= 3)
        assert k == 1 or len(set(sizes)) > 1
