"""Sending one message to one peer: deadlines, byte counts, typed failures."""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc

from swarm.network.wire import chunk_deserializer, chunk_serializer
from swarm.protos import sl_api_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["SwarmLearningPeer"].full_name
_DATA_FIELD = pb.ExchangeChunk.DESCRIPTOR.fields_by_name["data"].number
SERIALIZE_CHUNKS = chunk_serializer(_DATA_FIELD)
# Data chunks arrive as views of gRPC's bytes, without protobuf's copy of each.
DESERIALIZE_CHUNKS = chunk_deserializer(pb.ExchangeChunk, _DATA_FIELD)
# glibc serves a freed 1 MiB chunk's size from the heap after the first one is
# freed (its dynamic mmap threshold), and every gRPC thread's heap then keeps its
# peak: about 1.7 model sizes more per SL node at 45 MB (benchmarks/sl_memory.py).
# Chunks from mmap go back to the system when freed.
MMAP_THRESHOLD_BYTES = 256 << 10
_M_MMAP_THRESHOLD = -3
# Chunks stay below that threshold: a chunk's buffers (the serialized message, gRPC's
# copy of it, the received bytes) then reuse heap memory that is already mapped,
# instead of an mmap, a page fault and a zeroed page per 4 KiB and a munmap each, which
# cost about a quarter of a 45 MB round's CPU with 1 MiB chunks. Per-chunk Python work
# stays small next to the bytes (about 190 chunks per 45 MB). The margin covers the
# few bytes of framing and allocator headers each of those buffers adds.
CHUNK_BYTES = MMAP_THRESHOLD_BYTES - (8 << 10)
# Transfers get a floor rate for their deadlines: far below loopback or LAN speed,
# so only a peer that stopped answering hits it.
MIN_RATE_BYTES_S = 20e6


def return_chunks_to_the_system() -> bool:
    """Pins glibc's mmap threshold (no-op elsewhere); True if it was set."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return bool(libc and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


_libc = None


def _glibc():
    global _libc
    if _libc is None:
        name = ctypes.util.find_library("c")
        try:
            _libc = ctypes.CDLL(name) if name else False
        except OSError:
            _libc = False
    return _libc


def trim_heap() -> None:
    """Hands the heap's free pages back (glibc malloc_trim; no-op elsewhere).

    A transfer phase leaves gRPC's many small receive and send buffers freed but
    scattered over the heaps of its threads, about half a model size at 45 MB that
    would otherwise stay resident into the next phase and the next round."""
    libc = _glibc()
    if libc:
        try:
            libc.malloc_trim(0)
        except AttributeError:
            pass


class PushFailed(Exception):
    """A push did not land: the peer refused it (its reason) or could not be reached."""

    def __init__(self, message: str, unreachable: bool = False):
        super().__init__(message)
        self.unreachable = unreachable


@dataclass
class ByteCounter:
    sent: int = 0
    received: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, sent: int = 0, received: int = 0) -> None:
        with self.lock:
            self.sent += sent
            self.received += received


class Transport:
    """The peer channels, a push pool and the deadlines every message kind shares."""

    def __init__(self, channel_for, counter: ByteCounter, peer_timeout_s: float):
        self.channel_for = channel_for   # endpoint -> grpc.Channel (mTLS, SL role pinned)
        self.counter = counter
        self.timeout_s = peer_timeout_s
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="sl-push")

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def deadline_s(self, nbytes: int) -> float:
        return self.timeout_s + nbytes / MIN_RATE_BYTES_S

    def stream(self, endpoint: str, who: str, method: str, items, nbytes: int) -> None:
        """A client-streaming push of a header and raw chunks; raises PushFailed."""
        push = self.channel_for(endpoint).stream_unary(
            f"/{SERVICE}/{method}", request_serializer=SERIALIZE_CHUNKS,
            response_deserializer=pb.ExchangeAck.FromString)
        self._settle(who, endpoint, method,
                     lambda: push(items, timeout=self.deadline_s(nbytes)))

    def unary(self, endpoint: str, who: str, method: str, message) -> None:
        call = self.channel_for(endpoint).unary_unary(
            f"/{SERVICE}/{method}", request_serializer=type(message).SerializeToString,
            response_deserializer=pb.ExchangeAck.FromString)
        self._settle(who, endpoint, method, lambda: call(message, timeout=self.timeout_s))

    @staticmethod
    def _settle(who: str, endpoint: str, method: str, call) -> None:
        try:
            ack = call()
        except grpc.RpcError as error:
            raise PushFailed(f"{method} to {who} ({endpoint}) failed: {error.code().name}: "
                             f"{error.details()}",
                             unreachable=error.code() == grpc.StatusCode.UNAVAILABLE) from None
        if not ack.ok:
            raise PushFailed(f"{who} refused our {method}: {ack.error}")

    def chunks(self, header: pb.ExchangeHeader, data: memoryview, codec):
        """The stream of one push: its header, then the codec's chunks of data."""
        yield pb.ExchangeChunk(header=header)
        sent = 0
        try:
            for chunk in codec.encode(data, CHUNK_BYTES):
                sent += len(chunk)
                yield chunk  # sent as ExchangeChunk.data by SERIALIZE_CHUNKS, one copy
        finally:  # counted once per push, not under the lock per chunk
            self.counter.add(sent=sent)


@dataclass
class Link:
    """What every sender needs: the transport, the outgoing hook, the codec."""

    transport: Transport
    hook: object   # faults.OutgoingHook
    codec: object  # codec.Codec
