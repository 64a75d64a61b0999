"""How a range of the flat vector crosses the wire (identity today).

A codec sits between `data[a:b]` and the stream on the sending side, and between
the stream and the buffer it lands in (`update_rows`) on the receiving side. A
compression codec (hivemind's `CompressionBase`: compress / extract) plugs in here;
block hashes then have to cover what the codec emits, and updates should become
deltas from the previous merged model, which every node holds bit-identically.
"""

from __future__ import annotations

from typing import Iterable, Iterator, Protocol

from swarm.tensors import Assembler, iter_chunks


class Codec(Protocol):
    name: str

    def encode(self, data: memoryview, chunk_bytes: int) -> Iterator[memoryview]:
        """The chunks that carry data on the wire."""

    def decode_into(self, chunks: Iterable[bytes], out: memoryview, who: str,
                    limit_bytes: int) -> memoryview:
        """Fills out from the received chunks; returns the filled view (WeightsError)."""


class IdentityCodec:
    """Raw bytes: what is sent is what lands, with no copy after the network's."""

    name = "identity"

    def encode(self, data: memoryview, chunk_bytes: int) -> Iterator[memoryview]:
        return iter_chunks(data, chunk_bytes)

    def decode_into(self, chunks: Iterable[bytes], out: memoryview, who: str,
                    limit_bytes: int) -> memoryview:
        assembler = Assembler(len(out), limit_bytes=limit_bytes, who=who, out=out)
        for chunk in chunks:
            assembler.add(chunk)
        return assembler.finish()  # a view of `out`: no copy


IDENTITY = IdentityCodec()
