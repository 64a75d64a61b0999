"""adsValData that can be read more than once.

Validation runs after every merge, but a plain Python generator (the established
examples pass them) is spent after the first pass: later rounds would see no data.
`replayable` keeps a one-shot iterator's batches from its first pass and replays them;
anything that can be iterated again (tuples, DataLoaders, tf.data, Keras Sequences and
PyDatasets) is returned unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# A one-shot iterator longer than this is taken for an endless one (e.g. a generator
# with `while True`): refused with advice instead of filling memory.
MAX_REPLAY_BATCHES = 10_000


def is_one_shot(data: Any) -> bool:
    """True for iterators that a second `iter()` does not restart. Keras Sequence-style
    iterators (ImageDataGenerator.flow) index by batch and are left to Keras."""
    return (isinstance(data, Iterator)
            and not (hasattr(data, "__len__") and hasattr(data, "__getitem__")))


class Replay:
    """Iterates a one-shot iterator once, keeping its items; later passes replay them."""

    def __init__(self, source: Iterator, param: str = "adsValData",
                 limit: int = MAX_REPLAY_BATCHES):
        self._source: Iterator | None = source
        self._items: list = []
        self._param = param
        self._limit = limit

    def __iter__(self):
        # Items kept so far first: a pass that stopped early must not lose them.
        yield from list(self._items)
        if self._source is None:
            return
        for item in self._source:
            if len(self._items) >= self._limit:
                raise ValueError(
                    f"{self._param} yielded more than {self._limit} batches: a generator "
                    "is validated on in full after every merge, so it must end; pass a "
                    "finite generator, an (x, y) tuple or a re-iterable dataset")
            self._items.append(item)
            yield item
        self._source = None

    def __len__(self) -> int:
        if self._source is not None:
            raise TypeError("the number of batches is known after the first pass")
        return len(self._items)


def replayable(data: Any, param: str = "adsValData") -> Any:
    return Replay(data, param) if is_one_shot(data) else data
