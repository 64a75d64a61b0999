"""Layout: flat-vector round trips and the errors a wrong model gets."""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import pytest

from swarm.tensors import BLOCK_BYTES, Layout, TensorSpec, WeightsError, check_finite


def keras_like(rng: np.random.Generator) -> list[np.ndarray]:
    return [
        rng.standard_normal((3, 4)).astype(np.float32),
        rng.standard_normal(4).astype(np.float32),
        np.array(1.5, dtype=np.float32),  # 0-d
        np.zeros((0, 5), dtype=np.float32),  # empty
        rng.standard_normal((2, 2)).astype(np.float16),
    ]


def torch_like(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return OrderedDict(
        [
            ("conv.weight", rng.standard_normal((2, 1, 3, 3)).astype(np.float32)),
            ("bn.running_mean", rng.standard_normal(2).astype(np.float32)),
            ("bn.num_batches_tracked", np.array(12345, dtype=np.int64)),
            ("fc.weight", rng.standard_normal((3, 2)).astype(np.float16)),
            ("empty", np.zeros((4, 0), dtype=np.float32)),
            ("mask", np.array([True, False, True])),
            ("counts", np.array([0, 255, 7], dtype=np.uint8)),
        ]
    )


def assert_same(a, b) -> None:
    assert type(a) is type(b)
    items_a = a.items() if isinstance(a, dict) else enumerate(a)
    items_b = dict(b.items()) if isinstance(b, dict) else dict(enumerate(b))
    assert len(a) == len(b)
    for k, x in items_a:
        y = items_b[k]
        assert x.dtype == y.dtype and x.shape == y.shape, k
        np.testing.assert_array_equal(x, y)


def test_keras_list_round_trip() -> None:
    w = keras_like(np.random.default_rng(0))
    layout = Layout.from_weights(w)
    assert layout.container == "list" and layout.wire_dtype == "float32"
    assert [t.name for t in layout.tensors] == ["0", "1", "2", "3", "4"]
    assert layout.tensors[2].shape == () and layout.tensors[3].shape == (0, 5)
    flat = layout.flatten(w)
    assert flat.ndim == 1 and flat.dtype == np.float32 and flat.flags.c_contiguous
    assert layout.size == flat.size == 12 + 4 + 1 + 0 + 4
    assert layout.nbytes == flat.nbytes and layout.itemsize == 4
    back = layout.unflatten(flat)
    assert_same(w, back)
    # Copies, not views of the buffer: the receive buffer gets reused.
    flat[:] = 0
    assert back[0].any()
    # A tuple is a list container too; bytes and memoryviews unflatten the same.
    assert_same(w, layout.unflatten(layout.flatten(tuple(w)).tobytes()))
    assert_same(w, layout.unflatten(memoryview(layout.flatten(w))))


def test_torch_dict_round_trip_with_integer_buffers() -> None:
    w = torch_like(np.random.default_rng(1))
    layout = Layout.from_weights(w)
    assert layout.container == "dict" and layout.wire_dtype == "float32"
    assert [t.name for t in layout.tensors] == list(w)
    flat = layout.flatten(w)
    back = layout.unflatten(flat)
    assert isinstance(back, dict) and list(back) == list(w)
    for k in w:
        assert back[k].dtype == w[k].dtype and back[k].shape == w[k].shape, k
        np.testing.assert_array_equal(back[k], w[k])
    # Dict order at flatten time does not matter; names do.
    np.testing.assert_array_equal(layout.flatten(dict(reversed(list(w.items())))), flat)


def test_merged_integers_are_rounded_and_clipped() -> None:
    w = {"steps": np.array([1, 2, 3], dtype=np.int64), "u": np.array([1, 2], dtype=np.uint8), "b": np.array([True, False])}
    layout = Layout.from_weights(w)
    flat = np.array([1.4, 2.6, -3.5, -7.0, 300.0, 0.9, 0.2], dtype=np.float32)
    back = layout.unflatten(flat)
    np.testing.assert_array_equal(back["steps"], [1, 3, -4])
    np.testing.assert_array_equal(back["u"], [0, 255])
    np.testing.assert_array_equal(back["b"], [True, False])
    flat[0] = np.nan
    with pytest.raises(WeightsError, match="'steps'.*non-finite"):
        layout.unflatten(flat)


def test_narrowing_overflow_is_refused() -> None:
    layout = Layout.from_weights({"h": np.zeros(3, np.float16)})
    with pytest.raises(WeightsError, match=r"tensor 'h' \(float16\): value 1000000.0 at index 1 is out of range"):
        layout.unflatten(np.array([1, 1e6, 2], np.float32))
    # An Inf that arrived as Inf is check_finite's business, not a cast error.
    assert np.isinf(layout.unflatten(np.array([1, np.inf, 2], np.float32))["h"][1])


def test_float64_promotes_wire_dtype() -> None:
    w = [np.ones(3, dtype=np.float32), np.arange(2, dtype=np.float64) / 3, np.array(2**40, dtype=np.int64)]
    layout = Layout.from_weights(w)
    assert layout.wire_dtype == "float64" and layout.itemsize == 8
    flat = layout.flatten(w)
    assert flat.dtype == np.float64
    back = layout.unflatten(flat)
    assert back[1].dtype == np.float64 and back[1][1] == 1 / 3  # exact
    assert back[2] == 2**40
    with pytest.raises(WeightsError, match="float32 would lose tensor '1'"):
        Layout(layout.tensors, "list", "float32")


def test_json_round_trip_and_fingerprint() -> None:
    layout = Layout.from_weights(torch_like(np.random.default_rng(2)))
    again = Layout.from_json(layout.to_json())
    assert again == layout and again.fingerprint == layout.fingerprint
    assert len(layout.fingerprint) == 32
    other = Layout.from_weights({**torch_like(np.random.default_rng(2)), "extra": np.zeros(1, np.float32)})
    assert other.fingerprint != layout.fingerprint
    renamed = Layout((TensorSpec("x", (2,), "float32"),), "dict", "float32")
    reshaped = Layout((TensorSpec("x", (1, 2), "float32"),), "dict", "float32")
    retyped = Layout((TensorSpec("x", (2,), "float16"),), "dict", "float32")
    fps = {renamed.fingerprint, reshaped.fingerprint, retyped.fingerprint}
    assert len(fps) == 3


@pytest.mark.parametrize(
    "text, match",
    [
        ("not json", "malformed"),
        ("[]", "must be an object"),
        ('{"version":1}', "keys"),
        ('{"version":2,"container":"list","wire_dtype":"float32","tensors":[]}', "version"),
        ('{"version":1,"container":"list","wire_dtype":"float32","tensors":[]}', "no tensors"),
        ('{"version":1,"container":"set","wire_dtype":"float32","tensors":[{"name":"0","shape":[1],"dtype":"float32"}]}', "container"),
        ('{"version":1,"container":"list","wire_dtype":"int8","tensors":[{"name":"0","shape":[1],"dtype":"float32"}]}', "wire dtype"),
        ('{"version":1,"container":"list","wire_dtype":"float32","tensors":[{"name":"0","shape":[-1],"dtype":"float32"}]}', "'0': shape"),
        ('{"version":1,"container":"list","wire_dtype":"float32","tensors":[{"name":"0","shape":[true],"dtype":"float32"}]}', "'0': shape"),
        ('{"version":1,"container":"list","wire_dtype":"float32","tensors":[{"name":"0","shape":3,"dtype":"float32"}]}', "shape must be a list"),
        ('{"version":1,"container":"list","wire_dtype":"float32","tensors":[{"name":"0","shape":[1],"dtype":"complex64"}]}', "'0': dtype 'complex64'"),
        ('{"version":1,"container":"list","wire_dtype":"float32","tensors":[{"name":"a","shape":[1],"dtype":"float32"}]}', "index 0 must be named '0'"),
        ('{"version":1,"container":"dict","wire_dtype":"float32","tensors":[{"name":"a","shape":[1],"dtype":"float32"},{"name":"a","shape":[1],"dtype":"float32"}]}', "'a' appears twice"),
        ('{"version":1,"container":"dict","wire_dtype":"float32","tensors":[{"name":"a","shape":[1]}]}', "tensor 0 must be an object"),
    ],
)
def test_from_json_rejects_malformed(text: str, match: str) -> None:
    with pytest.raises(WeightsError, match=match):
        Layout.from_json(text)


def test_list_mismatches_name_the_tensor() -> None:
    w = keras_like(np.random.default_rng(3))
    layout = Layout.from_weights(w)
    with pytest.raises(WeightsError, match=r"expected 5 tensors, got 4: the first missing is tensor '4' \(2, 2\) float16"):
        layout.flatten(w[:4])
    with pytest.raises(WeightsError, match="expected 5 tensors, got 6: the first unexpected is tensor '5'"):
        layout.flatten(w + [np.zeros(1)])
    bad = list(w)
    bad[1] = np.zeros(5, dtype=np.float32)
    with pytest.raises(WeightsError, match=r"tensor '1': expected shape \(4,\), got \(5,\)"):
        layout.flatten(bad)
    with pytest.raises(WeightsError, match="expected a list of 5 tensors, got dict"):
        layout.flatten({str(i): x for i, x in enumerate(w)})
    bad = list(w)
    bad[0] = w[0].astype(np.complex64)
    with pytest.raises(WeightsError, match="tensor '0' has dtype 'complex64'"):
        layout.flatten(bad)
    bad = list(w)
    bad[0] = np.array(["a"] * 12).reshape(3, 4)
    with pytest.raises(WeightsError, match="tensor '0' has dtype"):
        layout.flatten(bad)
    # float64 into a float32 spec casts; a same-kind cast is allowed.
    ok = list(w)
    ok[0] = w[0].astype(np.float64)
    np.testing.assert_array_equal(layout.flatten(ok), layout.flatten(w))


def test_dict_mismatches_name_the_tensor() -> None:
    w = torch_like(np.random.default_rng(4))
    layout = Layout.from_weights(w)
    missing = dict(w)
    del missing["fc.weight"]
    with pytest.raises(WeightsError, match="missing tensor 'fc.weight'"):
        layout.flatten(missing)
    renamed = dict(w)
    renamed["fc.weights"] = renamed.pop("fc.weight")
    with pytest.raises(WeightsError, match="missing tensor 'fc.weight'; unexpected tensor 'fc.weights'"):
        layout.flatten(renamed)
    extra = {**w, "head.bias": np.zeros(2, np.float32)}
    with pytest.raises(WeightsError, match="unexpected tensor 'head.bias'"):
        layout.flatten(extra)
    wrong = {**w, "conv.weight": np.zeros((2, 1, 3), np.float32)}
    with pytest.raises(WeightsError, match=r"tensor 'conv.weight': expected shape \(2, 1, 3, 3\), got \(2, 1, 3\)"):
        layout.flatten(wrong)
    wrong = {**w, "bn.num_batches_tracked": np.array(1.5, np.float32)}
    with pytest.raises(WeightsError, match="tensor 'bn.num_batches_tracked': expected dtype int64, got float32"):
        layout.flatten(wrong)
    with pytest.raises(WeightsError, match="expected a dict of 7 tensors, got list"):
        layout.flatten(list(w.values()))


def test_from_weights_rejects_bad_input() -> None:
    with pytest.raises(WeightsError, match="no tensors"):
        Layout.from_weights([])
    with pytest.raises(WeightsError, match="list, tuple or dict"):
        Layout.from_weights(np.zeros(3))
    with pytest.raises(WeightsError, match="keys must be strings"):
        Layout.from_weights({1: np.zeros(3)})
    with pytest.raises(WeightsError, match="tensor 'x' has dtype 'object'"):
        Layout.from_weights({"x": np.array([object()])})


def test_flatten_into_out_and_unflatten_length_checks() -> None:
    w = keras_like(np.random.default_rng(5))
    layout = Layout.from_weights(w)
    out = np.full(layout.size, -1, dtype=np.float32)
    assert layout.flatten(w, out=out) is out
    np.testing.assert_array_equal(out, layout.flatten(w))
    with pytest.raises(WeightsError, match="out="):
        layout.flatten(w, out=np.empty(layout.size + 1, np.float32))
    with pytest.raises(WeightsError, match="out="):
        layout.flatten(w, out=np.empty(layout.size, np.float64))
    with pytest.raises(WeightsError, match=f"expected {layout.nbytes} bytes, got {layout.nbytes - 4}"):
        layout.unflatten(out.tobytes()[:-4])
    with pytest.raises(WeightsError, match=f"expected {layout.size} elements, got {layout.size - 1}"):
        layout.unflatten(out[:-1])
    with pytest.raises(WeightsError, match="expected dtype float32"):
        layout.unflatten(out.astype(np.float64))


def test_tensor_at_and_blocks() -> None:
    layout = Layout.from_weights({"a": np.zeros(3, np.float32), "e": np.zeros(0, np.float32), "b": np.zeros((2, 2), np.float32)})
    assert [layout.tensor_at(i) for i in range(7)] == ["a"] * 3 + ["b"] * 4
    with pytest.raises(IndexError):
        layout.tensor_at(7)
    assert layout.num_blocks == 1
    big = Layout((TensorSpec("x", (BLOCK_BYTES // 4 + 1,), "float32"),), "dict", "float32")
    assert big.num_blocks == 2


def test_check_finite_names_tensor_and_index() -> None:
    w = torch_like(np.random.default_rng(6))
    layout = Layout.from_weights(w)
    flat = layout.flatten(w)
    check_finite(flat, layout)
    first = layout.offsets[0] + 13  # conv.weight (2, 1, 3, 3): element 13 is [1, 0, 1, 1]
    flat[first] = np.nan
    flat[first + 2] = np.inf
    flat[layout.offsets[3]] = -np.inf
    with pytest.raises(WeightsError) as err:
        check_finite(flat, layout, who="update from site/sl-2")
    msg = str(err.value)
    assert msg.startswith(
        f"update from site/sl-2 has 3 non-finite values (NaN or Inf), the first at element {first} in tensor 'conv.weight'"
    ), msg
    assert "at index (1, 0, 1, 1) of shape (2, 1, 3, 3)" in msg
    # Without a layout: still count and position.
    with pytest.raises(WeightsError, match=f"update has 3 non-finite values .* element {first}$"):
        check_finite(flat)


def test_check_finite_across_scan_steps() -> None:
    flat = np.zeros(3_000_000, np.float32)
    flat[2_500_000] = np.nan
    flat[2_999_999] = np.inf
    with pytest.raises(WeightsError, match="2 non-finite values .* element 2500000"):
        check_finite(flat)


def test_45mb_timing() -> None:
    """Not an assertion on speed: prints flatten / unflatten / check / digest times."""
    from swarm.tensors import weights_digest

    rng = np.random.default_rng(7)
    # ~45 MB of float32 in a realistic mix of large and small tensors.
    w: dict[str, np.ndarray] = {}
    for i in range(40):
        w[f"block{i}/kernel"] = rng.standard_normal((512, 548), dtype=np.float32)
        w[f"block{i}/bias"] = rng.standard_normal(548, dtype=np.float32)
        w[f"block{i}/bn/num_batches_tracked"] = np.array(i, dtype=np.int64)
    layout = Layout.from_weights(w)
    times = {}
    t = time.perf_counter()
    flat = layout.flatten(w)
    times["flatten"] = time.perf_counter() - t
    t = time.perf_counter()
    back = layout.unflatten(flat)
    times["unflatten"] = time.perf_counter() - t
    t = time.perf_counter()
    check_finite(flat, layout)
    times["check_finite"] = time.perf_counter() - t
    t = time.perf_counter()
    weights_digest(layout, flat)
    times["digest"] = time.perf_counter() - t
    np.testing.assert_array_equal(back["block39/kernel"], w["block39/kernel"])
    print(f"\n45 MB timing ({layout.nbytes / 1e6:.1f} MB, {len(layout.tensors)} tensors): "
          + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in times.items()))
