"""PushPartial, both sides: one step of the small all-reduces a round needs
(validity votes under the vote agreement, partial distances of robust merges).

A partial is taken once per (round, step, sender); values must be finite and
bounded, votes one 0 or 1 per participant; anything else is refused like a NaN
update, and the sum is taken in participant order so it is bit-identical everywhere.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from swarm.protos import sl_api_pb2 as pb

from sl_node.exchange.faults import Kind, Outgoing
from sl_node.exchange.gate import Gate
from sl_node.exchange.inbox import RoundInbox
from sl_node.exchange.plan import FailReason, RoundFailed, RoundPlan
from sl_node.exchange.transport import Link, PushFailed

log = logging.getLogger("swarm.sl.exchange")
METHOD = "PushPartial"
# Far above any honest partial (n² pair distances for n <= 256 participants); per
# round, each partial is also at most max(n², n + 2) values, and steps are bounded.
MAX_VALUES = 1 << 17
MAX_STEPS = 1024
MAX_ABS = 1e300


def check_partial(plan: RoundPlan, values: np.ndarray, vote: bool) -> str | None:
    """Why these values are refused, or None."""
    limit = max(plan.size ** 2, plan.size + 2)
    if values.size > limit:
        return f"{values.size} values, over the limit of {limit} for {plan.size} participants"
    if not np.all(np.isfinite(values)):
        return "partial values must be finite"
    if values.size and np.max(np.abs(values)) > MAX_ABS:
        return f"partial values must be within ±{MAX_ABS:g}"
    if vote:
        if values.size != plan.size:
            return f"{values.size} votes for {plan.size} participants"
        if not np.all((values == 0) | (values == 1)):
            return "votes must be 0 or 1"
    return None


def push_partial(link: Link, plan: RoundPlan, inbox: RoundInbox, to: int, step: int,
                 values: np.ndarray, vote: bool) -> None:
    peer = plan.peers[to]
    for out in link.hook(Outgoing(Kind.PARTIAL, plan, to, values=values, step=step, vote=vote)):
        message = pb.Partial(round=plan.round, step=out.step, values=out.values.tolist(),
                             vote=vote)
        try:
            link.transport.unary(peer.endpoint, peer.node_id, METHOD, message)
        except PushFailed as error:
            log.warning("round %d: %s", plan.round, error)
            if error.unreachable:
                inbox.mark_unreachable(to)


def on_push_partial(gate: Gate, request: pb.Partial, context) -> pb.ExchangeAck:
    inbox, plan, sender = gate.sender(context, request.round, METHOD)
    who = plan.peers[sender].node_id
    key = (request.step, sender)
    if len(request.values) > MAX_VALUES:
        why = f"{len(request.values)} values, over the limit of {MAX_VALUES}"
    elif not 1 <= request.step <= MAX_STEPS:
        why = f"step {request.step} is outside 1..{MAX_STEPS}"
    else:
        values = np.asarray(request.values, dtype=np.float64)
        why = check_partial(plan, values, request.vote)
    if why is None and not inbox.claim(inbox.partials, key):
        why = (f"round {plan.round} is over here" if inbox.released else
               f"a second partial for step {request.step} of round {plan.round}")
    if why is not None:
        why = f"{who}: {why}"
        log.warning("round %d: refused a partial (step %d) of %s", plan.round,
                    request.step, why)
        inbox.refuse(inbox.partials, key, why)
        return pb.ExchangeAck(ok=False, error=why)
    inbox.accept(inbox.partials, key, values)
    return pb.ExchangeAck(ok=True)


def allreduce(link: Link, plan: RoundPlan, inbox: RoundInbox, step: int,
              values: np.ndarray, vote: bool = False) -> np.ndarray:
    """Sums values over every participant (RoundFailed naming who failed to send)."""
    others = plan.others
    for j in others:
        link.transport.pool.submit(push_partial, link, plan, inbox, j, step, values, vote)
    store = inbox.partials
    deadline = time.monotonic() + link.transport.timeout_s

    def settled(j):
        return ((step, j) in store.accepted or (step, j) in store.refused
                or j in inbox.unreachable)

    inbox.wait_for(lambda: all(settled(j) for j in others), deadline)
    bad = [j for j in others if (step, j) not in store.accepted
           or store.accepted[(step, j)].shape != values.shape]
    if bad:
        reasons = "; ".join(store.refused.get((step, j), f"{plan.peers[j].node_id}: nothing "
                                              f"usable within {link.transport.timeout_s:.0f} s")
                            for j in bad)
        raise RoundFailed(f"round {plan.round}: all-reduce step {step} failed: {reasons}",
                          FailReason.PEER_SILENT)
    total = np.zeros_like(values)
    for i in range(plan.size):
        total = total + (values if i == plan.me else store.accepted[(step, i)])
    return total
