"""The sidecar-facing servicer: the ML sidecar's weights in, merged weights out."""

from __future__ import annotations

import logging
import time

import grpc
import numpy as np

from swarm.network.sn_client import SwarmNetworkError
from swarm.network.wire import chunk_serializer
from swarm.protos import local_api_pb2 as lpb
from swarm.protos import local_api_pb2_grpc as lpb_grpc
from swarm.tensors import Assembler, WeightsError, check_finite, iter_chunks

from sl_node.node import SessionError, SwarmLearningNode

log = logging.getLogger("swarm.sl.local")
CHUNK_BYTES = 1 << 20


class SwarmLearningLocalServicer(lpb_grpc.SwarmLearningLocalServicer):
    """Serves the local channel; each Sync or Finish is one call into the SL node.

    Weights arrive as a header and raw chunks of the flat vector (checked against
    the layout the sidecar announced, and for NaN/Inf); the answer streams back
    the same way. Failures reach the sidecar as a gRPC status naming the problem.
    """

    def __init__(self, node: SwarmLearningNode):
        self._node = node

    def add_to_server(self, server: grpc.Server) -> None:
        """The generated registration, except that weights go out as raw chunks
        (one copy each instead of protobuf's three, see swarm.network.wire)."""
        raw = chunk_serializer(lpb.WeightChunk.DESCRIPTOR.fields_by_name["data"].number)
        chunks = {"request_deserializer": lpb.WeightChunk.FromString, "response_serializer": raw}
        handlers = {
            "Hello": grpc.unary_unary_rpc_method_handler(
                self.Hello, request_deserializer=lpb.HelloRequest.FromString,
                response_serializer=lpb.HelloReply.SerializeToString),
            "Sync": grpc.stream_stream_rpc_method_handler(self.Sync, **chunks),
            "Finish": grpc.stream_stream_rpc_method_handler(self.Finish, **chunks),
        }
        service = lpb.DESCRIPTOR.services_by_name["SwarmLearningLocal"].full_name
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
        server.add_registered_method_handlers(service, handlers)

    def Hello(self, request, context):
        try:
            return self._node.hello(request.config_json, request.layout_json, request.framework)
        except (SessionError, SwarmNetworkError) as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))

    def _weights(self, request_iterator, context, times: lpb.HandoffTimes
                 ) -> tuple[lpb.SyncHeader, np.ndarray | None]:
        started = time.perf_counter()
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("part") != "header":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a sync starts with its header")
        header = first.header
        layout = self._node.layout
        if layout is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, "call Hello first")
        if header.total_bytes == 0:
            return header, None
        try:
            if header.total_bytes != layout.nbytes:
                raise WeightsError(f"the sidecar sent {header.total_bytes} bytes, its model "
                                   f"layout has {layout.nbytes}")
            assembler = Assembler(header.total_bytes, who="the ML sidecar")
            for chunk in request_iterator:
                assembler.add(chunk.data)
            flat = np.frombuffer(assembler.finish(), dtype=layout.wire)
            received = time.perf_counter()
            times.receive_s = received - started
            check_finite(flat, layout, who="the ML sidecar's update")
            times.check_s = time.perf_counter() - received
        except WeightsError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        return header, flat

    def _reply(self, result: lpb.SyncResult, model, times: lpb.HandoffTimes):
        result.times.CopyFrom(times)
        yield lpb.WeightChunk(result=result)
        if model is not None:
            yield from iter_chunks(memoryview(model.flat.view(np.uint8)), CHUNK_BYTES)

    def Sync(self, request_iterator, context):
        times = lpb.HandoffTimes()
        header, flat = self._weights(request_iterator, context, times)
        if not header.weight <= 100:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"node weightage {header.weight} is outside 1..100")
        started = time.perf_counter()
        try:
            result, model = self._node.sync(flat, header.weight or 1,
                                            begin=header.kind == lpb.SyncHeader.BEGIN)
        except (SessionError, SwarmNetworkError) as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        times.node_s = time.perf_counter() - started
        yield from self._reply(result, model, times)

    def Finish(self, request_iterator, context):
        times = lpb.HandoffTimes()
        header, flat = self._weights(request_iterator, context, times)
        started = time.perf_counter()
        try:
            result, model = self._node.finish(flat, header.weight or 1,
                                              header.checkin_model_on_train_end or "inactive")
        except (SessionError, SwarmNetworkError) as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(error))
        times.node_s = time.perf_counter() - started
        yield from self._reply(result, model, times)
