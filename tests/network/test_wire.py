"""Raw chunk encoding: byte for byte what protobuf itself would send."""

from __future__ import annotations

import pytest

from swarm.network.wire import chunk_serializer, encode_bytes_field
from swarm.protos import local_api_pb2 as lpb
from swarm.protos import sl_api_pb2 as pb


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1 << 20, (1 << 21) + 3])
def test_raw_chunk_encoding_equals_protobufs_own(size):
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    raw = encode_bytes_field(2, memoryview(data))
    assert raw == pb.ExchangeChunk(data=data).SerializeToString()
    parsed = pb.ExchangeChunk.FromString(raw)
    assert parsed.WhichOneof("part") == "data" and parsed.data == data


def test_serializer_sends_headers_as_messages_and_views_as_the_data_field():
    serialize = chunk_serializer(lpb.WeightChunk.DESCRIPTOR.fields_by_name["data"].number)
    header = lpb.WeightChunk(header=lpb.SyncHeader(total_bytes=5))
    assert serialize(header) == header.SerializeToString()
    parsed = lpb.WeightChunk.FromString(serialize(memoryview(b"hello")))
    assert parsed.WhichOneof("part") == "data" and parsed.data == b"hello"


@pytest.mark.parametrize("size", [0, 1, 127, 128, 16383, 16384, 1 << 20])
def test_raw_chunks_come_back_as_views_of_the_data_field(size):
    from swarm.network.wire import chunk_deserializer
    field = lpb.WeightChunk.DESCRIPTOR.fields_by_name["data"].number
    serialize = chunk_serializer(field)
    deserialize = chunk_deserializer(lpb.WeightChunk, field)
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    view = deserialize(serialize(memoryview(data)))
    assert isinstance(view, memoryview) and view == data
    header = lpb.WeightChunk(header=lpb.SyncHeader(total_bytes=5))
    assert deserialize(serialize(header)) == header
    # A data field followed by anything else is a message, parsed as one.
    mixed = serialize(memoryview(data)) + lpb.WeightChunk(
        header=lpb.SyncHeader(total_bytes=1)).SerializeToString()
    assert not isinstance(deserialize(mixed), memoryview)
