"""PushMerged, both sides: an owner sends its merged range to every participant
(all-gather); a receiver checks that it is a range that owner owns and lands it in
its place in the round's result (a primary owner's) or in the replica buffer of the
owner's rank (replicated ownership: the runner then takes the majority)."""

from __future__ import annotations

import logging

import numpy as np

from swarm.protos import sl_api_pb2 as pb
from swarm.tensors import WeightsError, check_finite, verify_blocks

from sl_node.exchange.faults import Kind, Outgoing
from sl_node.exchange.gate import Gate, first_header
from sl_node.exchange.plan import RoundPlan
from sl_node.exchange.transport import Link

log = logging.getLogger("swarm.sl.exchange")
METHOD = "PushMerged"


def push_merged(link: Link, plan: RoundPlan, to: int, data: memoryview,
                hashes: list[bytes], shard: int | None = None) -> None:
    """Sends `to` our merged range of shard (our primary shard if not named)."""
    blocks = plan.shards[plan.me if shard is None else shard]
    header = pb.ExchangeHeader(round=plan.round, layout_fingerprint=plan.layout.fingerprint,
                               first_block=blocks.start, num_blocks=len(blocks),
                               total_bytes=len(data), block_hashes=hashes)
    peer = plan.peers[to]
    for out in link.hook(Outgoing(Kind.MERGED, plan, to, header, data)):
        link.transport.stream(peer.endpoint, peer.node_id, METHOD,
                              link.transport.chunks(out.header, out.data, link.codec),
                              len(out.data))


def on_push_merged(gate: Gate, request_iterator, context) -> pb.ExchangeAck:
    header = first_header(request_iterator)
    if header is None:
        return pb.ExchangeAck(ok=False, error="a push starts with its header")
    inbox, plan, owner = gate.sender(context, header.round, METHOD)
    who = plan.peers[owner].node_id
    store = inbox.merged
    key = None
    try:
        if header.layout_fingerprint != plan.layout.fingerprint:
            raise WeightsError(f"{who}'s merged range has another model layout")
        shards = plan.shard_at(owner, header.first_block, header.num_blocks)
        lo, hi = plan.byte_range(shards[0]) if shards else (0, -1)
        if not shards or header.total_bytes != hi - lo:
            raise WeightsError(f"{who} sent a merged range that is not one it owns")
        if len(header.block_hashes) != header.num_blocks:
            raise WeightsError(f"{who} sent {len(header.block_hashes)} hashes for "
                               f"{header.num_blocks} blocks")
        key = next(((s, owner) for s in shards if inbox.claim(store, (s, owner))), None)
        if key is None:
            raise WeightsError(f"round {plan.round} is over here" if inbox.released else
                               f"{who} pushed its merged range twice in round {plan.round}")
        data = gate.receive(request_iterator, header.total_bytes, who,
                            inbox.merged_buffer(key[0], plan.rank(owner, key[0])))
        # The hashes cover just this range, so check it as a vector of its own.
        verify_blocks(data, 0, list(header.block_hashes), who)
        check_finite(np.frombuffer(data, dtype=plan.layout.wire), who=f"merged range from {who}")
    except WeightsError as error:
        log.warning("round %d: refused the merged range of %s: %s", plan.round, who, error)
        # Before its shard is known, a refusal counts against the owner's primary.
        inbox.refuse(store, key if key else (owner, owner), str(error))
        return pb.ExchangeAck(ok=False, error=str(error))
    inbox.accept(store, key, (data, list(header.block_hashes)))
    return pb.ExchangeAck(ok=True)
