"""PushUpdate, both sides: a contributor sends each owner its range of its update
(reduce-scatter; with replicated ownership, every owner of every shard); the owner
checks it against the sealed round and lands it in place, in row `sender` of that
shard's update rows."""

from __future__ import annotations

import logging

import numpy as np

from swarm.protos import sl_api_pb2 as pb
from swarm.tensors import WeightsError, check_finite, verify_blocks, verify_hash_list

from sl_node.exchange.faults import Kind, Outgoing
from sl_node.exchange.gate import Gate, first_header
from sl_node.exchange.plan import RoundPlan
from sl_node.exchange.transport import Link

log = logging.getLogger("swarm.sl.exchange")
METHOD = "PushUpdate"


def push_update(link: Link, plan: RoundPlan, owner: int, data: memoryview,
                hashes: list[bytes], shard: int | None = None) -> None:
    """Sends owner shard `shard` of our update (its primary shard if not named), with
    all our block hashes (PushFailed)."""
    shard = owner if shard is None else shard
    blocks = plan.shards[shard]
    a, b = plan.byte_range(shard)
    header = pb.ExchangeHeader(round=plan.round, layout_fingerprint=plan.layout.fingerprint,
                               first_block=blocks.start, num_blocks=len(blocks),
                               total_bytes=b - a, block_hashes=hashes)
    peer = plan.peers[owner]
    for out in link.hook(Outgoing(Kind.UPDATE, plan, owner, header, data[a:b])):
        link.transport.stream(peer.endpoint, peer.node_id, METHOD,
                              link.transport.chunks(out.header, out.data, link.codec),
                              len(out.data))


def verify_update_header(plan: RoundPlan, sender: int, header: pb.ExchangeHeader) -> list[int]:
    """Checks a PushUpdate header against the sealed round; returns the shards of mine
    it may be for (one, or several empty ones); WeightsError says what is off."""
    peer = plan.peers[sender]
    if peer.weight == 0:
        raise WeightsError(f"{peer.node_id} checked in without an update (weight 0)")
    if header.layout_fingerprint != plan.layout.fingerprint:
        raise WeightsError(f"{peer.node_id}'s model layout differs from ours "
                           f"(shapes or dtypes of its weights do not match)")
    # The digest the sender checked in on the ledger vouches for its hash list.
    verify_hash_list(plan.layout, list(header.block_hashes), peer.digest, peer.node_id)
    shards = plan.shard_at(plan.me, header.first_block, header.num_blocks)
    if not shards:
        owned = ", ".join(f"{plan.shards[s].start}..{plan.shards[s].stop}"
                          for s, _ in plan.owned(plan.me))
        raise WeightsError(f"{peer.node_id} sent blocks {header.first_block}.."
                           f"{header.first_block + header.num_blocks}, this node owns "
                           f"{owned}")
    lo, hi = plan.byte_range(shards[0])
    if header.total_bytes != hi - lo:
        raise WeightsError(f"{peer.node_id} announced {header.total_bytes} bytes for "
                           f"{hi - lo} bytes of blocks")
    return shards


def on_push_update(gate: Gate, request_iterator, context) -> pb.ExchangeAck:
    header = first_header(request_iterator)
    if header is None:
        return pb.ExchangeAck(ok=False, error="a push starts with its header")
    inbox, plan, sender = gate.sender(context, header.round, METHOD)
    who = plan.peers[sender].node_id
    store = inbox.updates
    key = None
    try:
        shards = verify_update_header(plan, sender, header)
        key = next(((s, sender) for s in shards if inbox.claim(store, (s, sender))), None)
        if key is None:
            raise WeightsError(f"round {plan.round} is over here" if inbox.released else
                               f"{who} pushed a second update for round {plan.round}")
        data = gate.receive(request_iterator, header.total_bytes, who,
                            inbox.update_buffer(sender, key[0]))
        verify_blocks(data, header.first_block, list(header.block_hashes), who)
        check_finite(np.frombuffer(data, dtype=plan.layout.wire), who=f"update from {who}")
    except WeightsError as error:
        log.warning("round %d: refused the update of %s: %s", plan.round, who, error)
        # Before its shard is known, a refusal counts against my primary shard.
        inbox.refuse(store, key if key else (plan.me, sender), str(error))
        return pb.ExchangeAck(ok=False, error=str(error))
    inbox.accept(store, key, data)
    return pb.ExchangeAck(ok=True)
