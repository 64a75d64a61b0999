"""The ML sidecar's client of its own SL node (the SwarmLearningLocal service)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from swarm.protos import local_api_pb2 as pb
from swarm.protos import local_api_pb2_grpc as pb_grpc
from swarm.network.wire import chunk_serializer
from swarm.tensors import Assembler, Layout, WeightsError, iter_chunks

ADDRESS_ENV = "SWARM_SL_ADDRESS"
CHUNK_BYTES = 1 << 20
# A round waits for the slowest peer and Finish for min_peers nodes to end their
# epochs, which can take hours; the SL node, not this bound, drops dead peers.
ROUND_TIMEOUT_S = 24 * 3600.0
HELLO_TIMEOUT_S = 600.0
_KINDS = {"regular": pb.SyncHeader.REGULAR, "begin": pb.SyncHeader.BEGIN}
_CHECKIN_MODES = ("snapshot", "active", "inactive")


class LocalChannelError(RuntimeError):
    """The SL node could not be reached, refused a call, or answered something malformed;
    the message names the address, the call and the reason."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


@dataclass
class Handoff:
    """How one Sync or Finish went, as this side saw it (perf_counter seconds), with the
    SL node's own split (`node`: receive_s, check_s, node_s, write_s). For figures."""

    call: str
    path: str  # "region" | "socket"
    started: float = 0.0   # the call began (before the weights were sent)
    sent: float = 0.0      # the update was handed over (copied, or streamed out)
    answered: float = 0.0  # the SyncResult arrived
    done: float = 0.0      # the merged weights are ready to load
    node: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"call": self.call, "path": self.path, "started": self.started,
                "sent": self.sent, "answered": self.answered, "done": self.done,
                "node": self.node}


def resolve_address(address: str | None = None) -> str:
    """The SL node's local address: the argument, else $SWARM_SL_ADDRESS."""
    address = address or os.environ.get(ADDRESS_ENV, "").strip()
    if not address:
        raise LocalChannelError(
            f"{ADDRESS_ENV} is not set, so this program cannot find its SL node: "
            f"run this program through run-sl, or set {ADDRESS_ENV} to the SL node's "
            "local address (e.g. unix:///tmp/swarm/sl.sock)")
    return address


def _unix_path(address: str) -> Path | None:
    # gRPC spells unix sockets unix:relative, unix:/abs or unix:///abs.
    if address.startswith("unix://"):
        return Path(address[len("unix://"):])
    if address.startswith("unix:"):
        return Path(address[len("unix:"):])
    return None


class LocalChannel:
    """Carries one sidecar's calls to its SL node: Hello, Sync rounds and Finish.

    Responsible for finding the SL node (waiting, bounded, for its socket), streaming
    the flat weight vector out in ~1 MiB chunks behind a header, reassembling the
    answer with exactly the announced number of bytes, and turning every gRPC failure
    into a LocalChannelError a user can act on. It knows nothing about models.
    """

    def __init__(self, address: str | None = None, *, connect_timeout_s: float = 120.0,
                 round_timeout_s: float | None = ROUND_TIMEOUT_S,
                 chunk_bytes: int = CHUNK_BYTES, logger: logging.Logger | None = None):
        self.address = resolve_address(address)
        self.connect_timeout_s = connect_timeout_s
        self.round_timeout_s = round_timeout_s
        self.chunk_bytes = chunk_bytes
        self.log = logger or logging.getLogger("swarm.callback")
        self._channel = grpc.insecure_channel(self.address, options=[
            # The local SL node may start after us: retry the connection quickly
            # instead of gRPC's default back-off of up to two minutes.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
            # Chunks are ~1 MiB; leave room for an SL node that uses larger ones.
            ("grpc.max_receive_message_length", 64 << 20),
            ("grpc.max_send_message_length", 64 << 20),
        ])
        self._stub = pb_grpc.SwarmLearningLocalStub(self._channel)
        # Weights go out as raw chunks (one copy each, see swarm.network.wire).
        service = pb.DESCRIPTOR.services_by_name["SwarmLearningLocal"].full_name
        serialize = chunk_serializer(pb.WeightChunk.DESCRIPTOR.fields_by_name["data"].number)
        self._sync_call, self._finish_call = (
            self._channel.stream_stream(f"/{service}/{name}", request_serializer=serialize,
                                        response_deserializer=pb.WeightChunk.FromString)
            for name in ("Sync", "Finish"))
        self._ready = False
        self.last_handoff: Handoff | None = None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> LocalChannel:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- connecting ---------------------------------------------------------------

    def wait_ready(self) -> None:
        """Waits up to connect_timeout_s for the SL node to accept connections, logging
        while it waits (the SL node may still be starting, or joining its SN)."""
        if self._ready:
            return
        deadline = time.monotonic() + self.connect_timeout_s
        path = _unix_path(self.address)
        next_log = time.monotonic()  # say at once that we wait, then every 10 s
        if path is not None:
            while not path.exists():
                now = time.monotonic()
                if now >= deadline:
                    raise LocalChannelError(
                        f"SL node socket {path} did not appear within "
                        f"{self.connect_timeout_s:.0f} s: is run-sl running for this site, "
                        f"and is {ADDRESS_ENV}={self.address} the address it serves?")
                if now >= next_log:
                    self.log.info("Waiting for the SL node socket %s to appear ...", path)
                    next_log = now + 10.0
                time.sleep(0.1)
        future = grpc.channel_ready_future(self._channel)
        while True:
            left = deadline - time.monotonic()
            try:
                future.result(timeout=max(0.1, min(10.0, left)))
                break
            except grpc.FutureTimeoutError:
                if time.monotonic() >= deadline:
                    future.cancel()
                    raise LocalChannelError(
                        f"SL node at {self.address} did not accept a connection within "
                        f"{self.connect_timeout_s:.0f} s: is run-sl running for this site?"
                    ) from None
                self.log.info("Waiting for the SL node at %s to accept connections ...",
                              self.address)
        self._ready = True

    # ---- calls --------------------------------------------------------------------

    def hello(self, params, layout: Layout, framework: str) -> pb.HelloReply:
        """Introduces this sidecar: its parameters (`SwarmParams`) and model layout."""
        self.wait_ready()
        request = pb.HelloRequest(config_json=params.to_config_json(),
                                  layout_json=layout.to_json(), framework=framework)
        try:
            return self._stub.Hello(request, timeout=HELLO_TIMEOUT_S, wait_for_ready=True)
        except grpc.RpcError as error:
            raise self._error("Hello", error, HELLO_TIMEOUT_S) from None

    def sync(self, flat: np.ndarray, weight: int,
             kind: str = "regular") -> tuple[pb.SyncResult, np.ndarray | None]:
        """One round: sends `flat`, returns the round's result and the merged vector
        (None when the SL node has nothing to load)."""
        if kind not in _KINDS:
            raise ValueError(f"sync kind {kind!r} is not one of: {', '.join(_KINDS)}")
        header = pb.SyncHeader(kind=_KINDS[kind], weight=weight, total_bytes=flat.nbytes)
        return self._exchange("Sync", self._sync_call, header, flat)

    def finish(self, flat: np.ndarray, weight: int,
               mode: str = "inactive") -> tuple[pb.SyncResult, np.ndarray | None]:
        """Ends this node's training; returns when the swarm is done, with the final model."""
        if mode not in _CHECKIN_MODES:
            raise ValueError(f"checkin_model_on_train_end {mode!r} is not one of: "
                             f"{', '.join(_CHECKIN_MODES)}")
        header = pb.SyncHeader(kind=pb.SyncHeader.REGULAR, weight=weight,
                               total_bytes=flat.nbytes, checkin_model_on_train_end=mode)
        return self._exchange("Finish", self._finish_call, header, flat)

    def _exchange(self, call: str, method, header: pb.SyncHeader,
                  flat: np.ndarray) -> tuple[pb.SyncResult, np.ndarray | None]:
        self.wait_ready()
        handoff = Handoff(call, "socket", started=time.perf_counter())
        flat = np.ascontiguousarray(flat).reshape(-1)
        try:
            # No wait_for_ready: wait_ready() found the SL node already, and an SL node
            # that has gone away must fail the round now, not after the long bound.
            replies = method(self._requests(header, flat, handoff), timeout=self.round_timeout_s)
            result, data = self._receive(call, replies, flat, handoff)
        except grpc.RpcError as error:
            raise self._error(call, error, self.round_timeout_s) from None
        handoff.done = time.perf_counter()
        self.last_handoff = handoff
        return result, data

    def _requests(self, header: pb.SyncHeader, flat: np.ndarray,
                  handoff: Handoff) -> Iterator[pb.WeightChunk | memoryview]:
        yield pb.WeightChunk(header=header)
        # Memoryviews of `flat`, serialized as WeightChunk.data with a single copy.
        yield from iter_chunks(flat, chunk_bytes=self.chunk_bytes)
        handoff.sent = time.perf_counter()

    def _receive(self, call: str, replies, flat: np.ndarray, handoff: Handoff):
        who = f"SL node {self.address} {call} reply"
        result = None
        assembler = None
        for message in replies:
            part = message.WhichOneof("part")
            if result is None:
                if part != "result":
                    raise LocalChannelError(f"{who}: expected a SyncResult first, got {part or 'an empty message'}")
                result = message.result
                handoff.answered = time.perf_counter()
                handoff.node = {k: getattr(result.times, k)
                                for k in ("receive_s", "check_s", "node_s", "write_s")}
                if result.total_bytes == 0:
                    continue
                if result.total_bytes != flat.nbytes:
                    raise LocalChannelError(
                        f"{who}: announces {result.total_bytes} bytes of merged weights, "
                        f"but this model's flat vector has {flat.nbytes} bytes")
                assembler = Assembler(result.total_bytes, limit_bytes=flat.nbytes, who=who)
            elif part != "data":
                raise LocalChannelError(f"{who}: expected weight data after the SyncResult, got {part or 'an empty message'}")
            elif assembler is None:
                raise LocalChannelError(f"{who}: sent weight data after announcing none (total_bytes 0)")
            else:
                try:
                    assembler.add(message.data)
                except WeightsError as error:
                    raise LocalChannelError(f"{error}") from None
        if result is None:
            raise LocalChannelError(f"{who}: the stream ended without a SyncResult")
        if assembler is None:
            return result, None
        try:
            buffer = assembler.finish()
        except WeightsError as error:
            raise LocalChannelError(f"{error}") from None
        return result, np.frombuffer(buffer, dtype=flat.dtype)

    def _error(self, call: str, error: grpc.RpcError,
               timeout_s: float | None) -> LocalChannelError:
        code = error.code()
        details = error.details()
        if code == grpc.StatusCode.UNAVAILABLE:
            why = f"the SL node is not reachable (did run-sl stop?): {details}"
        elif code == grpc.StatusCode.DEADLINE_EXCEEDED:
            why = f"no answer within {timeout_s:.0f} s"
        else:
            why = f"{code.name}: {details}"
        return LocalChannelError(f"SL node {self.address} {call}: {why}", code)
