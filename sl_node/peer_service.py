"""The SL peer servicer: receives other SL nodes' pushes and serves merged models."""

from __future__ import annotations

import logging
from typing import Callable

import grpc
import numpy as np

from swarm.identity import Authorizer
from swarm.protos import sl_api_pb2 as pb
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.tensors import Assembler, WeightsError, check_finite, iter_chunks, verify_blocks

from sl_node.exchange import CHUNK_BYTES, ByteCounter, RoundInbox, RoundPlan, verify_update_header

log = logging.getLogger("swarm.sl.peer")

# A push may arrive while this node is still learning that the round is sealed.
PLAN_WAIT_S = 15.0


def _first_header(request_iterator) -> pb.ExchangeHeader | None:
    first = next(request_iterator, None)
    return first.header if first is not None and first.WhichOneof("part") == "header" else None


class SwarmLearningPeerServicer(pb_grpc.SwarmLearningPeerServicer):
    """Checks every push against the sealed round before it lands in the round's inbox.

    The sender's identity comes from its certificate and must match the fingerprint
    the ledger holds for that participant; an update's block hashes must match the
    digest it checked in; every block must match its hash and hold finite values.
    A push that fails any check is refused with an error naming the problem, and
    the round goes on without that update.
    """

    def __init__(self, authorizer: Authorizer, inbox_for: Callable[[int], RoundInbox],
                 counter: ByteCounter, latest_model: Callable[[int], tuple | None],
                 max_model_bytes: int):
        self._auth = authorizer
        self._inbox_for = inbox_for
        self._counter = counter
        self._latest_model = latest_model
        self._max_bytes = max_model_bytes

    def _sender(self, context, round_number: int, action: str) -> tuple[RoundInbox, RoundPlan, int]:
        who = self._auth.authorize(context, ("sl",), action)
        inbox = self._inbox_for(round_number)
        plan = inbox.wait_plan(PLAN_WAIT_S)
        if plan is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"this node has no sealed round {round_number} to take part in")
        index = plan.index_of(who.node_id, who.fingerprint)
        if index is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who.node_id} (certificate {who.short_fingerprint}…) is not a "
                          f"participant of round {round_number}")
        return inbox, plan, index

    def _receive(self, chunks, total: int, who: str, out: memoryview) -> memoryview:
        if total > self._max_bytes:
            raise WeightsError(f"{who} announced {total} bytes, over the limit of "
                               f"{self._max_bytes}")
        assembler = Assembler(total, limit_bytes=self._max_bytes, who=who, out=out)
        for chunk in chunks:
            if chunk.WhichOneof("part") != "data":
                raise WeightsError(f"{who} sent a second header in one stream")
            assembler.add(chunk.data)
            self._counter.add(received=len(chunk.data))
        return assembler.finish()  # a view of `out`: no copy

    def PushUpdate(self, request_iterator, context):
        header = _first_header(request_iterator)
        if header is None:
            return pb.ExchangeAck(ok=False, error="a push starts with its header")
        inbox, plan, sender = self._sender(context, header.round, "PushUpdate")
        who = plan.peers[sender].node_id
        try:
            verify_update_header(plan, sender, header)
            if not inbox.claim("updates", sender):
                raise WeightsError(f"{who} pushed a second update for round {plan.round}")
            data = self._receive(request_iterator, header.total_bytes, who,
                                 inbox.update_buffer(sender))
            verify_blocks(data, header.first_block, list(header.block_hashes), who)
            check_finite(np.frombuffer(data, dtype=plan.layout.wire), who=f"update from {who}")
        except WeightsError as error:
            log.warning("round %d: refused the update of %s: %s", plan.round, who, error)
            inbox.put("rejected", sender, str(error))
            return pb.ExchangeAck(ok=False, error=str(error))
        inbox.put("updates", sender, data)
        return pb.ExchangeAck(ok=True)

    def PushMerged(self, request_iterator, context):
        header = _first_header(request_iterator)
        if header is None:
            return pb.ExchangeAck(ok=False, error="a push starts with its header")
        inbox, plan, owner = self._sender(context, header.round, "PushMerged")
        who = plan.peers[owner].node_id
        blocks = plan.shards[owner]
        lo, hi = plan.byte_range(owner)
        try:
            if header.layout_fingerprint != plan.layout.fingerprint:
                raise WeightsError(f"{who}'s merged range has another model layout")
            if (header.first_block, header.num_blocks, header.total_bytes) != (
                    blocks.start, len(blocks), hi - lo):
                raise WeightsError(f"{who} sent a merged range that is not the one it owns")
            if len(header.block_hashes) != len(blocks):
                raise WeightsError(f"{who} sent {len(header.block_hashes)} hashes for "
                                   f"{len(blocks)} blocks")
            if not inbox.claim("merged", owner):
                raise WeightsError(f"{who} pushed its merged range twice in round {plan.round}")
            data = self._receive(request_iterator, header.total_bytes, who,
                                 inbox.merged_buffer(owner))
            # The hashes cover just this range, so check it as a vector of its own.
            verify_blocks(data, 0, list(header.block_hashes), who)
        except WeightsError as error:
            log.warning("round %d: refused the merged range of %s: %s", plan.round, who, error)
            return pb.ExchangeAck(ok=False, error=str(error))
        inbox.put("merged", owner, data, extra=list(header.block_hashes))
        return pb.ExchangeAck(ok=True)

    def PushPartial(self, request, context):
        inbox, plan, sender = self._sender(context, request.round, "PushPartial")
        values = np.asarray(request.values, dtype=np.float64)
        if not np.all(np.isfinite(values)):
            return pb.ExchangeAck(ok=False, error="partial values must be finite")
        inbox.put("partials", (request.step, sender), values)
        return pb.ExchangeAck(ok=True)

    def FetchModel(self, request, context):
        who = self._auth.authorize(context, ("sl",), "FetchModel")
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
            self._counter.add(sent=len(chunk))
            yield pb.ExchangeChunk(data=bytes(chunk))
