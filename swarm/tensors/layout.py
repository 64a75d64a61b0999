"""The layout of a model's weights and its one flat wire vector.

Keras hands us a list of arrays, PyTorch a state_dict (name -> array, integer buffers
included), plain NumPy code either. Everything between a sidecar, its SL node and the
peers travels as ONE flat, little-endian vector of a single wire dtype, so shards are
plain byte ranges and merges are plain vector arithmetic. The Layout says how to cut
that vector back into named tensors; its fingerprint binds every digest to it, so two
nodes whose models differ in any name, shape or dtype can never agree on a digest.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Union

import numpy as np

BLOCK_BYTES = 64 * 1024
LAYOUT_VERSION = 1

# Little-endian on every host: digests hash raw bytes, so the byte order is part of the format.
WIRE_DTYPES: dict[str, np.dtype] = {"float32": np.dtype("<f4"), "float64": np.dtype("<f8")}

# What may appear in a model. Complex, object, string and ml_dtypes types (bfloat16) are
# refused up front rather than mangled: the framework adapter must convert those first.
SUPPORTED_DTYPES: frozenset[str] = frozenset(
    ["float16", "float32", "float64", "bool"]
    + [f"{k}{b}" for k in ("int", "uint") for b in (8, 16, 32, 64)]
)

Weights = Union[list[Any], tuple[Any, ...], Mapping[str, Any]]
Buffer = Union[np.ndarray, bytes, bytearray, memoryview]

# Elements per step when scanning for NaN/Inf: bounds the temporary mask to ~1 MB.
_SCAN_ELEMENTS = 1 << 20


class WeightsError(ValueError):
    """Weights that do not fit their layout, or are otherwise unusable; the message says
    which tensor, element or block and what was expected versus what arrived."""


def _shape_str(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor: its shape and its NumPy dtype name."""

    name: str
    shape: tuple[int, ...]
    dtype: str

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise WeightsError(f"tensor name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.shape, tuple) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in self.shape
        ):
            raise WeightsError(
                f"tensor {self.name!r}: shape must be a tuple of non-negative ints, got {self.shape!r}"
            )
        if not isinstance(self.dtype, str) or self.dtype not in SUPPORTED_DTYPES:
            raise WeightsError(
                f"tensor {self.name!r}: dtype {self.dtype!r} is not supported "
                f"(expected one of {', '.join(sorted(SUPPORTED_DTYPES))})"
            )

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        return f"tensor {self.name!r} {_shape_str(self.shape)} {self.dtype}"


def _wire_for(tensors: tuple[TensorSpec, ...]) -> str:
    # float64 anywhere means float32 would lose it; everything else fits float32 (int64
    # buffers such as num_batches_tracked stay exact up to 2**24).
    return "float64" if any(t.dtype == "float64" for t in tensors) else "float32"


def _as_array(name: str, value: Any) -> np.ndarray:
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged lists, objects without __array__, ...
        raise WeightsError(f"tensor {name!r} is not an array: {exc}") from None
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise WeightsError(
            f"tensor {name!r} has dtype {arr.dtype.name!r}, which cannot travel as weights "
            f"(expected one of {', '.join(sorted(SUPPORTED_DTYPES))})"
        )
    return arr


@dataclass(frozen=True)
class Layout:
    """Names, shapes and dtypes of a model's tensors, in flat-vector order."""

    tensors: tuple[TensorSpec, ...]
    container: str  # "list" | "dict": what unflatten hands back
    wire_dtype: str  # "float32", or "float64" if any tensor is float64

    def __post_init__(self) -> None:
        if not isinstance(self.tensors, tuple) or not all(isinstance(t, TensorSpec) for t in self.tensors):
            raise WeightsError("layout tensors must be a tuple of TensorSpec")
        if not self.tensors:
            # Keras returns [] from get_weights() before the model is built: say so early.
            raise WeightsError("layout has no tensors (was the model built before its weights were taken?)")
        if not isinstance(self.container, str) or self.container not in ("list", "dict"):
            raise WeightsError(f"layout container must be 'list' or 'dict', got {self.container!r}")
        if not isinstance(self.wire_dtype, str) or self.wire_dtype not in WIRE_DTYPES:
            raise WeightsError(f"wire dtype must be 'float32' or 'float64', got {self.wire_dtype!r}")
        if self.wire_dtype == "float32" and _wire_for(self.tensors) == "float64":
            first = next(t for t in self.tensors if t.dtype == "float64")
            raise WeightsError(f"wire dtype float32 would lose {first.describe()}: expected float64")
        seen: set[str] = set()
        for i, t in enumerate(self.tensors):
            if t.name in seen:
                raise WeightsError(f"tensor name {t.name!r} appears twice (again at index {i})")
            seen.add(t.name)
        if self.container == "list":
            # List layouts are positional; their names are the positions, as from_weights makes them.
            for i, t in enumerate(self.tensors):
                if t.name != str(i):
                    raise WeightsError(f"list layout: tensor at index {i} must be named {str(i)!r}, got {t.name!r}")

    # ---- construction and serialisation -------------------------------------------

    @classmethod
    def from_weights(cls, weights: Weights) -> Layout:
        """The layout of a list/tuple (names "0", "1", ...) or dict (keys, in order) of arrays."""
        items = _items(weights)
        specs = []
        for name, value in items:
            arr = _as_array(name, value)
            specs.append(TensorSpec(name, tuple(int(d) for d in arr.shape), arr.dtype.name))
        tensors = tuple(specs)
        container = "dict" if isinstance(weights, Mapping) else "list"
        return cls(tensors, container, _wire_for(tensors))

    def _canonical(self) -> dict[str, Any]:
        return {
            "version": LAYOUT_VERSION,
            "container": self.container,
            "wire_dtype": self.wire_dtype,
            "tensors": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in self.tensors],
        }

    def to_json(self) -> str:
        # Canonical (sorted keys, no spaces, ASCII) so the same layout is the same bytes everywhere.
        return json.dumps(self._canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Layout:
        """Parse and validate a layout from an untrusted peer or file."""
        try:
            doc = json.loads(text)
        except (ValueError, TypeError) as exc:
            raise WeightsError(f"layout JSON is malformed: {exc}") from None
        if not isinstance(doc, dict):
            raise WeightsError(f"layout JSON must be an object, got {type(doc).__name__}")
        expected = {"version", "container", "wire_dtype", "tensors"}
        if set(doc) != expected:
            raise WeightsError(
                f"layout JSON keys: expected {sorted(expected)}, got {sorted(map(str, doc))}"
            )
        if type(doc["version"]) is not int or doc["version"] != LAYOUT_VERSION:
            raise WeightsError(f"layout version: expected {LAYOUT_VERSION}, got {doc['version']!r}")
        if not isinstance(doc["tensors"], list):
            raise WeightsError("layout JSON 'tensors' must be a list")
        specs = []
        for i, t in enumerate(doc["tensors"]):
            if not isinstance(t, dict) or set(t) != {"name", "shape", "dtype"}:
                raise WeightsError(
                    f"layout JSON tensor {i} must be an object with name, shape and dtype, got {t!r:.200}"
                )
            if not isinstance(t["shape"], list):
                raise WeightsError(
                    f"layout JSON tensor {i} ({t['name']!r:.100}): shape must be a list, got {t['shape']!r:.100}"
                )
            specs.append(TensorSpec(t["name"], tuple(t["shape"]), t["dtype"]))
        return cls(tuple(specs), doc["container"], doc["wire_dtype"])

    # ---- sizes --------------------------------------------------------------------

    @cached_property
    def offsets(self) -> tuple[int, ...]:
        """Start element of each tensor in the flat vector, plus the total at the end."""
        out = [0]
        for t in self.tensors:
            out.append(out[-1] + t.size)
        return tuple(out)

    @property
    def wire(self) -> np.dtype:
        """The wire dtype as a (little-endian) NumPy dtype."""
        return WIRE_DTYPES[self.wire_dtype]

    @property
    def size(self) -> int:
        return self.offsets[-1]

    @property
    def itemsize(self) -> int:
        return self.wire.itemsize

    @property
    def nbytes(self) -> int:
        return self.size * self.itemsize

    @property
    def num_blocks(self) -> int:
        return -(-self.nbytes // BLOCK_BYTES)

    @cached_property
    def fingerprint(self) -> bytes:
        return hashlib.sha256(self.to_json().encode("ascii")).digest()

    def tensor_index_at(self, element_index: int) -> int:
        """Position in ``tensors`` of the tensor that holds flat element ``element_index``."""
        if not 0 <= element_index < self.size:
            raise IndexError(f"element {element_index} is outside the flat vector of {self.size} elements")
        # bisect_right over the start offsets lands past empty tensors (start == end) for free.
        return bisect.bisect_right(self.offsets, element_index) - 1

    def tensor_at(self, element_index: int) -> str:
        """Name of the tensor that holds flat element ``element_index`` (for error messages)."""
        return self.tensors[self.tensor_index_at(element_index)].name

    # ---- flatten / unflatten ------------------------------------------------------

    def flatten(self, weights: Weights, out: np.ndarray | None = None) -> np.ndarray:
        """Copy ``weights`` into one 1-D C-contiguous vector of the wire dtype.

        Checks the container kind, names, shapes and that each dtype casts to its
        spec's dtype within its kind (float64 into float32 is fine, float into int
        is not), naming the first tensor that does not fit.
        """
        arrays = self._match(weights)
        if out is None:
            out = np.empty(self.size, dtype=self.wire)
        elif not (
            isinstance(out, np.ndarray) and out.ndim == 1 and out.dtype == self.wire
            and out.size == self.size and out.flags.c_contiguous and out.flags.writeable
        ):
            raise WeightsError(
                f"flatten out= must be a writeable C-contiguous 1-D {self.wire_dtype} array of "
                f"{self.size} elements, got {getattr(out, 'dtype', type(out).__name__)} "
                f"{getattr(out, 'shape', '')}"
            )
        offsets = self.offsets
        for i, (spec, arr) in enumerate(zip(self.tensors, arrays)):
            # A reshaped slice of `out` is a view: copyto writes straight into the vector,
            # casting on the fly, with no per-tensor temporaries even for strided inputs.
            np.copyto(out[offsets[i]:offsets[i + 1]].reshape(spec.shape), arr, casting="unsafe")
        return out

    def _match(self, weights: Weights) -> list[np.ndarray]:
        if self.container == "dict":
            if not isinstance(weights, Mapping):
                raise WeightsError(
                    f"expected a dict of {len(self.tensors)} tensors, got {type(weights).__name__}"
                )
            missing = [t.name for t in self.tensors if t.name not in weights]
            if missing or len(weights) != len(self.tensors):
                names = {t.name for t in self.tensors}
                extra = [str(k) for k in weights if k not in names]
                parts = [_first_of("missing", missing), _first_of("unexpected", extra)]
                raise WeightsError(
                    f"expected {len(self.tensors)} tensors, got {len(weights)}: " + "; ".join(p for p in parts if p)
                )
            values = [weights[t.name] for t in self.tensors]
        else:
            if isinstance(weights, Mapping) or not isinstance(weights, (list, tuple)):
                raise WeightsError(
                    f"expected a list of {len(self.tensors)} tensors, got {type(weights).__name__}"
                )
            if len(weights) != len(self.tensors):
                n = min(len(weights), len(self.tensors))
                what = (
                    f"the first missing is {self.tensors[n].describe()}"
                    if len(weights) < len(self.tensors)
                    else f"the first unexpected is tensor {str(n)!r}"
                )
                raise WeightsError(f"expected {len(self.tensors)} tensors, got {len(weights)}: {what}")
            values = list(weights)
        arrays = []
        for spec, value in zip(self.tensors, values):
            arr = _as_array(spec.name, value)
            if arr.shape != spec.shape:
                raise WeightsError(
                    f"tensor {spec.name!r}: expected shape {_shape_str(spec.shape)}, got {_shape_str(arr.shape)}"
                )
            if arr.dtype.name != spec.dtype and not np.can_cast(arr.dtype, spec.dtype, "same_kind"):
                raise WeightsError(f"tensor {spec.name!r}: expected dtype {spec.dtype}, got {arr.dtype.name}")
            arrays.append(arr)
        return arrays

    def unflatten(self, flat: Buffer) -> list[np.ndarray] | dict[str, np.ndarray]:
        """Cut a flat wire vector (array, or its raw bytes) back into the original tensors.

        Returns fresh arrays in their original shapes and dtypes, never views of
        ``flat``: the receive buffer gets reused. Integer tensors are rounded to the
        nearest value and clipped to their dtype's range (a merged mean of step
        counters is rarely whole); bool tensors are true where the rounded value is
        non-zero.
        """
        vec = self.as_flat(flat)
        offsets = self.offsets
        out: list[np.ndarray] = []
        for i, spec in enumerate(self.tensors):
            seg = vec[offsets[i]:offsets[i + 1]]
            dtype = np.dtype(spec.dtype)
            if dtype.kind == "f":
                with np.errstate(over="ignore"):
                    arr = seg.astype(dtype)  # always a copy, native byte order
                if dtype.itemsize < self.itemsize and not np.isfinite(arr).all():
                    # Narrowing (float16, or float32 on a float64 wire) must not turn a
                    # finite merged value into Inf behind the sidecar's back.
                    grew = np.flatnonzero(~np.isfinite(arr) & np.isfinite(seg))
                    if grew.size:
                        raise WeightsError(
                            f"tensor {spec.name!r} ({spec.dtype}): value {seg[grew[0]]} at index "
                            f"{grew[0]} is out of range ({grew.size} such values)"
                        )
            else:
                if not np.isfinite(seg).all():
                    bad = int(np.argmin(np.isfinite(seg)))
                    raise WeightsError(
                        f"tensor {spec.name!r} ({spec.dtype}) has a non-finite value {seg[bad]} at index {bad}"
                    )
                rounded = np.rint(seg)
                if dtype.kind == "b":
                    arr = rounded != 0
                else:
                    info = np.iinfo(dtype)
                    # Clip in the wire dtype first: casting an out-of-range float to int is undefined.
                    arr = np.clip(rounded, info.min, info.max).astype(dtype)
            out.append(arr.reshape(spec.shape))
        if self.container == "dict":
            return {spec.name: arr for spec, arr in zip(self.tensors, out)}
        return out

    def as_flat(self, flat: Buffer) -> np.ndarray:
        """View ``flat`` (a wire-dtype vector, a uint8 array, bytes or a memoryview) as the
        1-D wire vector, checking its length; zero-copy where the input allows."""
        if isinstance(flat, np.ndarray) and flat.dtype != np.uint8:
            if flat.dtype != self.wire:
                raise WeightsError(f"flat vector: expected dtype {self.wire_dtype} (little-endian), got {flat.dtype}")
            if flat.size != self.size:
                raise WeightsError(f"flat vector: expected {self.size} elements, got {flat.size}")
            return flat.reshape(-1)
        try:
            raw = memoryview(flat).cast("B") if not isinstance(flat, np.ndarray) else flat.reshape(-1)
        except (TypeError, ValueError) as exc:
            raise WeightsError(f"flat vector: not a contiguous byte buffer: {exc}") from None
        if raw.nbytes != self.nbytes:
            raise WeightsError(f"flat vector: expected {self.nbytes} bytes, got {raw.nbytes}")
        return np.frombuffer(raw, dtype=self.wire)


def _first_of(what: str, names: list[str]) -> str:
    if not names:
        return ""
    more = f" (and {len(names) - 1} more)" if len(names) > 1 else ""
    return f"{what} tensor {names[0]!r}{more}"


def _items(weights: Weights) -> list[tuple[str, Any]]:
    if isinstance(weights, Mapping):
        for k in weights:
            if not isinstance(k, str):
                raise WeightsError(f"weights dict keys must be strings, got {k!r} ({type(k).__name__})")
        return list(weights.items())
    if isinstance(weights, (list, tuple)):
        return [(str(i), w) for i, w in enumerate(weights)]
    raise WeightsError(f"weights must be a list, tuple or dict of arrays, got {type(weights).__name__}")


def check_finite(flat: np.ndarray, layout: Layout | None = None, who: str = "update") -> None:
    """Refuse a vector with NaN or Inf, naming who sent it, how many and where the first is.

    One vectorised pass in ~1 M-element steps (small temporaries); the location work
    runs only when something is wrong.
    """
    vec = layout.as_flat(flat) if layout is not None else np.asarray(flat).reshape(-1)
    if vec.dtype.kind == "f" and vec.size:
        # A NaN or Inf anywhere makes the sum NaN or Inf, so a finite sum proves the
        # vector clean in one pass with no temporaries (~7x faster than the scan);
        # a non-finite sum (perhaps only overflow) falls through to the exact scan.
        with np.errstate(over="ignore", invalid="ignore"):
            if np.isfinite(np.add.reduce(vec)):
                return
    count = 0
    first = -1
    for start in range(0, vec.size, _SCAN_ELEMENTS):
        ok = np.isfinite(vec[start:start + _SCAN_ELEMENTS])
        if not ok.all():
            count += ok.size - int(np.count_nonzero(ok))
            if first < 0:
                first = start + int(np.argmin(ok))
    if not count:
        return
    where = f"the first at element {first}"
    if layout is not None:
        i = layout.tensor_index_at(first)
        spec = layout.tensors[i]
        where += f" in tensor {spec.name!r}"
        if spec.shape:
            index = tuple(int(j) for j in np.unravel_index(first - layout.offsets[i], spec.shape))
            where += f" at index {index} of shape {_shape_str(spec.shape)}"
    raise WeightsError(f"{who} has {count} non-finite value{'s' if count != 1 else ''} (NaN or Inf), {where}")
