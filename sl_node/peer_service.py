"""The SL peer servicer: a thin gRPC face over the exchange package's receivers,
and FetchModel (the latest merged model for late joiners and catch-up)."""

from __future__ import annotations

import logging
from typing import Callable

import grpc
import numpy as np

from swarm.protos import sl_api_pb2 as pb
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.tensors import iter_chunks

from sl_node.exchange import CHUNK_BYTES, Gate
from sl_node.exchange.merged import on_push_merged
from sl_node.exchange.partial import on_push_partial
from sl_node.exchange.transport import DESERIALIZE_CHUNKS, SERIALIZE_CHUNKS, SERVICE
from sl_node.exchange.update import on_push_update

log = logging.getLogger("swarm.sl.peer")


class SwarmLearningPeerServicer(pb_grpc.SwarmLearningPeerServicer):
    """Checks every push against the sealed round before it lands in the round's inbox.

    The sender's identity comes from its certificate and must match the fingerprint
    the ledger holds for that participant (and not be revoked); an update's block
    hashes must match the digest it checked in; every block must match its hash and
    hold finite values. A push that fails any check is refused with an error naming
    the problem, and the receipts tell the others.
    """

    def __init__(self, gate: Gate, latest_model: Callable[[int], tuple | None]):
        self._gate = gate
        self._latest_model = latest_model

    def PushUpdate(self, request_iterator, context):
        return on_push_update(self._gate, request_iterator, context)

    def PushMerged(self, request_iterator, context):
        return on_push_merged(self._gate, request_iterator, context)

    def PushPartial(self, request, context):
        return on_push_partial(self._gate, request, context)

    def FetchModel(self, request, context):
        who = self._gate.authorize(context, "FetchModel")
        held = self._latest_model(request.round)
        if held is None:
            context.abort(grpc.StatusCode.NOT_FOUND,
                          f"no merged model of round {request.round or 'latest'} here")
        round_number, layout, flat, hashes, digest = held
        log.info("serving the merged model of round %d to %s", round_number, who.node_id)
        data = memoryview(flat.view(np.uint8))
        yield pb.ExchangeChunk(header=pb.ExchangeHeader(
            round=round_number, layout_fingerprint=layout.fingerprint, first_block=0,
            num_blocks=len(hashes), total_bytes=len(data), block_hashes=hashes,
            layout_json=layout.to_json(), merged_digest=digest))
        for chunk in iter_chunks(data, CHUNK_BYTES):
            self._gate.counter.add(sent=len(chunk))
            yield chunk  # serialized as ExchangeChunk.data by SERIALIZE_CHUNKS: one copy


def add_to_server(servicer: SwarmLearningPeerServicer, server: grpc.Server) -> None:
    """Registers the servicer, with every data chunk on the single-copy wire path (pushes
    land from views of gRPC's bytes; FetchModel's chunks are built without protobuf)."""
    handlers = {
        "PushUpdate": grpc.stream_unary_rpc_method_handler(
            servicer.PushUpdate, request_deserializer=DESERIALIZE_CHUNKS,
            response_serializer=pb.ExchangeAck.SerializeToString),
        "PushMerged": grpc.stream_unary_rpc_method_handler(
            servicer.PushMerged, request_deserializer=DESERIALIZE_CHUNKS,
            response_serializer=pb.ExchangeAck.SerializeToString),
        "PushPartial": grpc.unary_unary_rpc_method_handler(
            servicer.PushPartial, request_deserializer=pb.Partial.FromString,
            response_serializer=pb.ExchangeAck.SerializeToString),
        "FetchModel": grpc.unary_stream_rpc_method_handler(
            servicer.FetchModel, request_deserializer=pb.FetchRequest.FromString,
            response_serializer=SERIALIZE_CHUNKS),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
