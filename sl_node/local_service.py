"""The sidecar-facing servicer: the ML sidecar's weights in, merged weights out."""

from __future__ import annotations

import logging
import math
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from swarm.network.sn_client import SwarmNetworkError
from swarm.network.wire import chunk_deserializer, chunk_serializer
from swarm.protos import local_api_pb2 as lpb
from swarm.protos import local_api_pb2_grpc as lpb_grpc
from swarm.tensors import DEFAULT_CHUNK_BYTES, Assembler, WeightsError, check_finite, iter_chunks
from swarm.tensors.region import DATA_OFFSET, RegionError, SharedRegion

from sl_node.node import SessionError, SwarmLearningNode

log = logging.getLogger("swarm.sl.local")
# A sidecar reports a handful of validation metrics per merge, not a table.
MAX_METRICS = 32


def _chunk_data(chunk) -> memoryview | bytes:
    if isinstance(chunk, memoryview):
        return chunk
    if chunk.WhichOneof("part") != "data":
        raise WeightsError(f"the ML sidecar sent a {chunk.WhichOneof('part') or 'empty'} "
                           "message among its weight chunks")
    return chunk.data


class SwarmLearningLocalServicer(lpb_grpc.SwarmLearningLocalServicer):
    """Serves the local channel; each Sync or Finish is one call into the SL node.

    Weights arrive either in the shared-memory region the sidecar offered at Hello
    (the call says where, under a sequence number) or as a header and raw chunks of
    the flat vector; either way they are checked against the layout the sidecar
    announced, and for NaN/Inf, before the round. The merged weights go back the way
    the update came. Failures reach the sidecar as a gRPC status naming the problem;
    the node carries on.
    """

    def __init__(self, node: SwarmLearningNode, region_dir: Path | None = None):
        self._node = node
        self._region_dir = region_dir  # where offered regions are looked up (default /dev/shm)
        self._region: SharedRegion | None = None
        self._last_seq = 0
        # One call at a time may use the region: the node reads the update in place
        # during its round and writes the merged weights over it.
        self._region_lock = threading.Lock()

    def add_to_server(self, server: grpc.Server) -> None:
        """The generated registration, except that weights travel as raw chunks
        (one copy each way instead of protobuf's three, see swarm.network.wire)."""
        field = lpb.WeightChunk.DESCRIPTOR.fields_by_name["data"].number
        # Data chunks arrive as views of gRPC's bytes, without protobuf's copy.
        chunks = {"request_deserializer": chunk_deserializer(lpb.WeightChunk, field),
                  "response_serializer": chunk_serializer(field)}
        handlers = {
            "Hello": grpc.unary_unary_rpc_method_handler(
                self.Hello, request_deserializer=lpb.HelloRequest.FromString,
                response_serializer=lpb.HelloReply.SerializeToString),
            "Sync": grpc.stream_stream_rpc_method_handler(self.Sync, **chunks),
            "Finish": grpc.stream_stream_rpc_method_handler(self.Finish, **chunks),
            "ReportMetrics": grpc.unary_unary_rpc_method_handler(
                self.ReportMetrics, request_deserializer=lpb.MetricsReport.FromString,
                response_serializer=lpb.MetricsAck.SerializeToString),
        }
        service = lpb.DESCRIPTOR.services_by_name["SwarmLearningLocal"].full_name
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)

    def Hello(self, request, context):
        try:
            reply = self._node.hello(request.config_json, request.layout_json, request.framework)
        except (SessionError, SwarmNetworkError) as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        self._attach(request.region if request.HasField("region") else None, reply)
        return reply

    def _attach(self, offer: lpb.RegionOffer | None, reply: lpb.HelloReply) -> None:
        """Maps the sidecar's region, if it offers one usable here (and says why not
        otherwise), in place of any earlier sidecar's."""
        if offer is None and self._region is None:
            return
        if not self._region_lock.acquire(blocking=False):
            # A sidecar that restarted while its predecessor's round still runs.
            reply.region_refused = "an earlier sync through the shared region is still running"
            log.info("shared memory with the sidecar is not possible now: %s; weights go "
                     "over the socket", reply.region_refused)
            return
        try:
            if self._region is not None:
                self._region.close()
                self._region = None
            if offer is None:
                return
            needed = DATA_OFFSET + self._node.layout.nbytes
            try:
                if offer.size != needed:
                    raise RegionError(f"the offered region has {offer.size} bytes, the model "
                                      f"needs {needed}")
                self._region = SharedRegion.attach(offer.name, offer.size, offer.nonce,
                                                    self._region_dir)
            except RegionError as error:
                reply.region_refused = str(error)
                log.info("shared memory with the sidecar is not possible: %s; weights go "
                         "over the socket", error)
                return
            self._last_seq = 0
            reply.region_accepted = True
            log.info("the sidecar's weights come through shared memory (%s, %.1f MB)",
                     offer.name, self._node.layout.nbytes / 1e6)
        finally:
            self._region_lock.release()

    def _header(self, request_iterator, context) -> lpb.SyncHeader:
        first = next(request_iterator, None)
        if first is None or isinstance(first, memoryview) or first.WhichOneof("part") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a sync starts with its header")
        if self._node.layout is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "call Hello first")
        return first.header

    def _weights(self, header: lpb.SyncHeader, request_iterator, context,
                 times: lpb.HandoffTimes, started: float) -> np.ndarray | None:
        layout = self._node.layout
        if header.total_bytes == 0 and not header.HasField("region"):
            return None
        try:
            if header.total_bytes != layout.nbytes:
                raise WeightsError(f"the sidecar sent {header.total_bytes} bytes, its model "
                                   f"layout has {layout.nbytes}")
            if header.HasField("region"):
                flat = self._in_region(header.region, request_iterator, layout)
            else:
                assembler = Assembler(header.total_bytes, who="the ML sidecar")
                for chunk in request_iterator:
                    assembler.add(_chunk_data(chunk))
                flat = np.frombuffer(assembler.finish(), dtype=layout.wire)
            received = time.perf_counter()
            times.receive_s = received - started
            check_finite(flat, layout, who="the ML sidecar's update")
            times.check_s = time.perf_counter() - received
        except WeightsError as error:  # RegionError included
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return flat

    def _in_region(self, ref: lpb.RegionRef, request_iterator, layout) -> np.ndarray:
        """The update in place in the region (read-only), after checking the call's
        header against the region: set up, the next sequence number, the sidecar's
        control word, the model's length, a span inside the region."""
        region = self._region
        if region is None:
            raise RegionError("the sync names a shared-memory region, but none was set up "
                              "at Hello")
        if ref.seq <= self._last_seq:
            raise RegionError(f"sync number {ref.seq} is not after the last one "
                              f"({self._last_seq}): a stale or repeated call")
        if region.up_seq != ref.seq:
            raise RegionError(f"the region's control page holds update {region.up_seq}, the "
                              f"call says {ref.seq}: the update was not written for this call")
        if ref.length != layout.nbytes:
            raise RegionError(f"the update in the region has {ref.length} bytes, the model "
                              f"layout has {layout.nbytes}")
        flat = region.array(ref.offset, ref.length, layout.wire, "the sync's region",
                            writeable=False)
        if next(request_iterator, None) is not None:
            raise RegionError("a sync through the shared region carries no weight chunks")
        self._last_seq = ref.seq
        return flat

    def _reply(self, result: lpb.SyncResult, model, times: lpb.HandoffTimes,
               header: lpb.SyncHeader, context):
        if model is not None and header.HasField("region"):
            if not context.is_active():
                return  # the sidecar is gone: leave the region alone
            ref = header.region
            started = time.perf_counter()
            out = self._region.array(ref.offset, ref.length, model.flat.dtype, "merged")
            np.copyto(out, model.flat)
            self._region.down_seq = ref.seq
            times.write_s = time.perf_counter() - started
            result.region.CopyFrom(ref)
            model = None
        result.times.CopyFrom(times)
        yield lpb.WeightChunk(result=result)
        if model is not None:
            yield from iter_chunks(memoryview(model.flat.view(np.uint8)), DEFAULT_CHUNK_BYTES)

    def _call(self, request_iterator, context, run):
        """One Sync or Finish: the update in, `run(header, flat)` on the node, the
        merged weights out; a region call holds the region until it has answered."""
        times = lpb.HandoffTimes()
        started = time.perf_counter()
        header = self._header(request_iterator, context)
        region_call = header.HasField("region")
        if region_call and not self._region_lock.acquire(blocking=False):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          "an earlier sync through the shared region is still running")
        try:
            flat = self._weights(header, request_iterator, context, times, started)
            started = time.perf_counter()
            try:
                result, model = run(header, flat)
            except (SessionError, SwarmNetworkError) as error:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
            times.node_s = time.perf_counter() - started
            yield from self._reply(result, model, times, header, context)
        finally:
            if region_call:
                self._region_lock.release()

    def Sync(self, request_iterator, context):
        def run(header, flat):
            if not header.weight <= 100:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                              f"node weightage {header.weight} is outside 1..100")
            return self._node.sync(flat, header.weight or 1,
                                   begin=header.kind == lpb.SyncHeader.BEGIN)

        yield from self._call(request_iterator, context, run)

    def Finish(self, request_iterator, context):
        def run(header, flat):
            return self._node.finish(flat, header.weight or 1,
                                     header.checkin_model_on_train_end or "inactive")

        yield from self._call(request_iterator, context, run)

    def ReportMetrics(self, request, context):
        """The sidecar's validation metrics of a merged model: onto the next outcome."""
        metrics = {name[:64]: float(value) for name, value in request.metrics.items()
                   if math.isfinite(value)}
        if len(metrics) > MAX_METRICS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{len(metrics)} metrics reported; at most {MAX_METRICS}")
        self._node.outcomes.note_metrics(request.round, metrics)
        return lpb.MetricsAck()
