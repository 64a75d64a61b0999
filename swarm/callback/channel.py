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
from swarm.network.wire import chunk_deserializer, chunk_serializer
from swarm.session import CHECKIN_MODES
from swarm.tensors import DEFAULT_CHUNK_BYTES, Assembler, Layout, WeightsError, iter_chunks
from swarm.tensors.region import DATA_OFFSET, RegionError, SharedRegion

ADDRESS_ENV = "SWARM_SL_ADDRESS"
# "off" keeps the weights on the socket even where shared memory would work.
SHM_ENV = "SWARM_SHM"
# A round waits for the slowest peer and Finish for min_peers nodes to end their
# epochs, which can take hours; the SL node, not this bound, drops dead peers.
ROUND_TIMEOUT_S = 24 * 3600.0
HELLO_TIMEOUT_S = 600.0
_KINDS = {"regular": pb.SyncHeader.REGULAR, "begin": pb.SyncHeader.BEGIN}


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
    done_cpu: float = 0.0  # this process's CPU seconds (time.process_time) then
    node: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"call": self.call, "path": self.path, "started": self.started,
                "sent": self.sent, "answered": self.answered, "done": self.done,
                "done_cpu": self.done_cpu, "node": self.node}


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


def _shm_wanted() -> bool:
    return os.environ.get(SHM_ENV, "on").strip().lower() not in ("off", "0", "false", "no")


class LocalChannel:
    """Carries one sidecar's calls to its SL node: Hello, Sync rounds and Finish.

    Responsible for finding the SL node (waiting, bounded, for its socket), moving the
    flat weight vector each way, and turning every gRPC failure into a
    LocalChannelError a user can act on. It knows nothing about models.

    The weights take the shared-memory region the Hello set up when the SL node could
    map it (same host, same /dev/shm, same user): a call then carries only where they
    are and a sequence number, and the merged weights come back in the same place.
    Otherwise, logged once, they stream over the socket in ~1 MiB chunks behind a
    header, and the answer is reassembled with exactly the announced number of bytes.
    """

    def __init__(self, address: str | None = None, *, connect_timeout_s: float = 120.0,
                 round_timeout_s: float | None = ROUND_TIMEOUT_S,
                 chunk_bytes: int = DEFAULT_CHUNK_BYTES, logger: logging.Logger | None = None,
                 shared_memory: bool | None = None):
        self.address = resolve_address(address)
        # None: on unless SWARM_SHM=off; it is used only if the SL node can map it.
        self.shared_memory = _shm_wanted() if shared_memory is None else shared_memory
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
        field = pb.WeightChunk.DESCRIPTOR.fields_by_name["data"].number
        # ... and come back as views of gRPC's bytes, without protobuf's copy.
        self._sync_call, self._finish_call = (
            self._channel.stream_stream(
                f"/{service}/{name}", request_serializer=chunk_serializer(field),
                response_deserializer=chunk_deserializer(pb.WeightChunk, field))
            for name in ("Sync", "Finish"))
        self._ready = False
        self.last_handoff: Handoff | None = None
        self._region: SharedRegion | None = None
        self._seq = 0

    @property
    def path(self) -> str:
        """How the weights travel now: "region" (shared memory) or "socket"."""
        return "region" if self._region is not None else "socket"

    def send_buffer(self) -> np.ndarray | None:
        """The region's data as a writeable byte array (None on the socket path): a
        vector flattened straight into it (Layout.flatten(out=...view(dtype))) is
        sent without a copy. Its contents change with every call."""
        if self._region is None:
            return None
        return self._region.array(DATA_OFFSET, self._region.data_bytes, np.uint8,
                                  "send buffer")

    def send_array(self, layout: Layout) -> np.ndarray | None:
        """Where `layout.flatten(weights, out=...)` should write the next update: the
        region's data as a writeable vector of the wire dtype, or None on the socket
        path. The update then goes without a copy; the array's contents change with
        every call (the merged weights come back in the same place)."""
        if self._region is None or self._region.data_bytes != layout.nbytes:
            return None
        return self._region.array(DATA_OFFSET, layout.nbytes, layout.wire, "send buffer")

    def close(self) -> None:
        self._drop_region()
        self._channel.close()

    def _drop_region(self) -> None:
        if self._region is not None:
            self._region.close()
            self._region = None

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
        self._drop_region()
        region = self._offer_region(layout) if self.shared_memory else None
        if region is not None:
            request.region.CopyFrom(pb.RegionOffer(name=region.name, size=region.size,
                                                   nonce=region.nonce))
        try:
            reply = self._stub.Hello(request, timeout=HELLO_TIMEOUT_S, wait_for_ready=True)
        except grpc.RpcError as error:
            raise self._error("Hello", error, HELLO_TIMEOUT_S) from None
        finally:
            if region is not None:
                region.unlink()  # mapped by the SL node, or not wanted: no name left behind
        if region is not None:
            if reply.region_accepted:
                self._region = region
                self.log.info("Weights go to the SL node through shared memory (%s, %.1f MiB)",
                              region.name, region.data_bytes / 2**20)
            else:
                region.close()
                self.log.info("The SL node cannot map this program's shared memory (%s): "
                              "weights go over the socket", reply.region_refused or
                              "an SL node without shared-memory support")
        return reply

    def _offer_region(self, layout: Layout) -> SharedRegion | None:
        try:
            return SharedRegion.create(layout.nbytes)
        except RegionError as error:
            self.log.info("No shared memory for the weights (%s): they go over the socket",
                          error)
            return None

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
        if mode not in CHECKIN_MODES:
            raise ValueError(f"checkin_model_on_train_end {mode!r} is not one of: "
                             f"{', '.join(CHECKIN_MODES)}")
        header = pb.SyncHeader(kind=pb.SyncHeader.REGULAR, weight=weight,
                               total_bytes=flat.nbytes, checkin_model_on_train_end=mode)
        return self._exchange("Finish", self._finish_call, header, flat)

    def report_metrics(self, round_number: int, metrics: dict[str, float]) -> None:
        """Tells the SL node the validation metrics of round `round_number`'s merged
        model, for its round records and its SN (the dashboard)."""
        self.wait_ready()
        request = pb.MetricsReport(round=round_number,
                                   metrics={k: float(v) for k, v in metrics.items()})
        try:
            self._stub.ReportMetrics(request, timeout=HELLO_TIMEOUT_S)
        except grpc.RpcError as error:
            raise self._error("ReportMetrics", error, HELLO_TIMEOUT_S) from None

    def _exchange(self, call: str, method, header: pb.SyncHeader,
                  flat: np.ndarray) -> tuple[pb.SyncResult, np.ndarray | None]:
        self.wait_ready()
        region = self._region
        if region is not None and flat.nbytes != region.data_bytes:
            raise LocalChannelError(f"{call}: the flat vector has {flat.nbytes} bytes, the "
                                    f"model this channel said Hello with {region.data_bytes}")
        handoff = Handoff(call, self.path, started=time.perf_counter())
        flat = np.ascontiguousarray(flat).reshape(-1)
        if region is not None:
            requests = iter([pb.WeightChunk(header=self._to_region(header, flat, region))])
            handoff.sent = time.perf_counter()
        else:
            requests = self._requests(header, flat, handoff)
        try:
            # No wait_for_ready: wait_ready() found the SL node already, and an SL node
            # that has gone away must fail the round now, not after the long bound.
            replies = method(requests, timeout=self.round_timeout_s)
            result, data = self._receive(call, replies, flat, handoff)
        except grpc.RpcError as error:
            raise self._error(call, error, self.round_timeout_s) from None
        handoff.done, handoff.done_cpu = time.perf_counter(), time.process_time()
        self.last_handoff = handoff
        return result, data

    def _to_region(self, header: pb.SyncHeader, flat: np.ndarray,
                   region: SharedRegion) -> pb.SyncHeader:
        """Puts the update in the region (no copy if it was flattened there) and says
        where, under the next sequence number, which the control page gets last."""
        self._seq += 1
        data = region.array(DATA_OFFSET, flat.nbytes, flat.dtype, "update")
        if data.ctypes.data != flat.ctypes.data:
            np.copyto(data, flat)
        region.up_seq = self._seq
        header.region.CopyFrom(pb.RegionRef(offset=DATA_OFFSET, length=flat.nbytes,
                                            seq=self._seq))
        return header

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
        merged = None
        for message in replies:
            raw = message if isinstance(message, memoryview) else None
            part = "data" if raw is not None else message.WhichOneof("part")
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
                if result.HasField("region"):
                    merged = self._from_region(who, result.region, flat)
                    continue
                assembler = Assembler(result.total_bytes, limit_bytes=flat.nbytes, who=who)
            elif part != "data":
                raise LocalChannelError(f"{who}: expected weight data after the SyncResult, got {part or 'an empty message'}")
            elif merged is not None:
                raise LocalChannelError(f"{who}: sent weight data after putting the merged "
                                        "weights in the shared region")
            elif assembler is None:
                raise LocalChannelError(f"{who}: sent weight data after announcing none (total_bytes 0)")
            else:
                try:
                    assembler.add(raw if raw is not None else message.data)
                except WeightsError as error:
                    raise LocalChannelError(f"{error}") from None
        if result is None:
            raise LocalChannelError(f"{who}: the stream ended without a SyncResult")
        if merged is not None:
            return result, merged
        if assembler is None:
            return result, None
        try:
            buffer = assembler.finish()
        except WeightsError as error:
            raise LocalChannelError(f"{error}") from None
        return result, np.frombuffer(buffer, dtype=flat.dtype)

    def _from_region(self, who: str, ref: pb.RegionRef, flat: np.ndarray) -> np.ndarray:
        """The merged weights where the SL node says it wrote them, checked: this call's
        sequence number in the reply and in the control page, the model's length, a
        span inside the region. A read-only view, valid until the next call."""
        region = self._region
        if region is None:
            raise LocalChannelError(f"{who}: points into a shared region this channel "
                                    "never set up")
        if ref.seq != self._seq or region.down_seq != self._seq:
            raise LocalChannelError(
                f"{who}: merged weights for call {ref.seq} (control page: "
                f"{region.down_seq}), but this is call {self._seq}")
        if ref.length != flat.nbytes:
            raise LocalChannelError(f"{who}: {ref.length} bytes of merged weights in the "
                                    f"region, but this model's flat vector has {flat.nbytes}")
        try:
            return region.array(ref.offset, ref.length, flat.dtype, who, writeable=False)
        except RegionError as error:
            raise LocalChannelError(str(error)) from None

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
