"""Merge methods: how n participants' values for one shard become the merged shard.

``get_merge(name, **params)`` builds one; every method follows ``MergeMethod``. Methods
are coordinate-wise (mean, coordmedian, trimmedmean: a shard merges alone) or
distance-based (geomedian, krum, centeredclipping: small allreduces of partial squared
distances make a sharded merge equal the whole-vector one). See ``base`` for the contract.
"""

from __future__ import annotations

import dataclasses

from .base import AllReduce, MergeMethod, no_allreduce
from .centered_clipping import CenteredClipping
from .coordmedian import CoordMedian, weighted_lower_median
from .geomedian import GeoMedian
from .krum import Krum
from .mean import Mean
from .trimmedmean import TrimmedMean

_METHODS: dict[str, type] = {cls.name: cls for cls in (
    Mean, CoordMedian, TrimmedMean, GeoMedian, Krum, CenteredClipping)}

MERGE_METHODS: tuple[str, ...] = tuple(_METHODS)


def get_merge(name: str, **params: object) -> MergeMethod:
    """The merge method called ``name`` with ``params`` (each method's docstring lists them).

    Names match case-insensitively, ignoring "_" and "-" ("centered_clipping" works).
    An unknown name or parameter, or a bad value, raises ValueError naming it and what
    is allowed.
    """
    key = name.strip().lower().replace("_", "").replace("-", "") if isinstance(name, str) else None
    cls = _METHODS.get(key)  # type: ignore[arg-type]
    if cls is None:
        raise ValueError(f"unknown merge method {name!r}; allowed: {', '.join(MERGE_METHODS)}")
    allowed = [field.name for field in dataclasses.fields(cls) if field.init]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"merge method {cls.name!r} has no parameter {unknown[0]!r}; "
                         f"allowed: {', '.join(allowed) or 'none'}")
    return cls(**params)


__all__ = [
    "MERGE_METHODS",
    "AllReduce",
    "CenteredClipping",
    "CoordMedian",
    "GeoMedian",
    "Krum",
    "Mean",
    "MergeMethod",
    "TrimmedMean",
    "get_merge",
    "no_allreduce",
    "weighted_lower_median",
]
