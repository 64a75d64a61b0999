"""The receiving side's common checks: who is pushing, for which round, into which inbox."""

from __future__ import annotations

import threading
from collections import Counter
from contextlib import contextmanager
import grpc

from swarm.identity import Authorizer, NodeIdentity
from swarm.tensors import WeightsError

from sl_node.exchange.codec import IDENTITY
from sl_node.exchange.inbox import Inboxes, RoundInbox
from sl_node.exchange.plan import RoundPlan
from sl_node.exchange.transport import ByteCounter

# A push may arrive while this node is still learning that the round is sealed.
PLAN_WAIT_S = 15.0
# Calls one peer may have parked (waiting for a plan) at once: far below the
# server's worker pool, so no single peer can fill it.
MAX_PARKED_PER_PEER = 4


class Refused(Exception):
    """A push refused before it landed; the text goes back in the ack."""


class Gate:
    """Authorises every call by certificate (the authorizer also refuses revoked
    certificates), then finds the sender's place in the round."""

    def __init__(self, authorizer: Authorizer, inboxes: Inboxes, counter: ByteCounter,
                 max_model_bytes: int, codec=IDENTITY, plan_wait_s: float = PLAN_WAIT_S):
        self.auth = authorizer
        self.inboxes = inboxes
        self.counter = counter
        self.max_bytes = max_model_bytes
        self.codec = codec
        self._plan_wait_s = plan_wait_s
        self._parked: Counter = Counter()
        self._lock = threading.Lock()

    def authorize(self, context, action: str) -> NodeIdentity:
        return self.auth.authorize(context, ("sl",), action)

    @contextmanager
    def _parking(self, context, who: NodeIdentity):
        with self._lock:
            if self._parked[who.fingerprint] >= MAX_PARKED_PER_PEER:
                context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                              f"{who.node_id} already has {MAX_PARKED_PER_PEER} calls waiting "
                              f"for a round here")
            self._parked[who.fingerprint] += 1
        try:
            yield
        finally:
            with self._lock:
                self._parked[who.fingerprint] -= 1

    def sender(self, context, round_number: int, action: str
               ) -> tuple[RoundInbox, RoundPlan, int]:
        """(inbox, plan, sender index) of an authorised participant, or the call ends."""
        who = self.authorize(context, action)
        inbox = self.inboxes.for_push(round_number)
        if isinstance(inbox, str):
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, inbox)
        plan = inbox.plan
        if plan is None:
            with self._parking(context, who):
                plan = inbox.wait_plan(self._plan_wait_s)
        if plan is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"this node has no sealed round {round_number} to take part in")
        index = plan.index_of(who.node_id, who.fingerprint)
        if index is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who.node_id} (certificate {who.short_fingerprint}…) is not a "
                          f"participant of round {round_number}")
        return inbox, plan, index

    def receive(self, chunks, total: int, who: str, out: memoryview) -> memoryview:
        """The data chunks of a push, decoded straight into out."""
        return receive_into(chunks, total, who, out, self.counter, self.max_bytes, self.codec)


def receive_into(chunks, total: int, who: str, out: memoryview, counter: ByteCounter,
                 max_bytes: int, codec=IDENTITY) -> memoryview:
    """The data chunks of a stream (after its header) decoded straight into out: every
    chunked model reception (pushes, FetchModel) goes through here."""
    if total > max_bytes:
        raise WeightsError(f"{who} announced {total} bytes, over the limit of {max_bytes}")
    if total != len(out):
        raise WeightsError(f"{who} announced {total} bytes for a range of {len(out)}")

    def data():
        received = 0
        try:
            for chunk in chunks:
                if not isinstance(chunk, memoryview):  # a view of gRPC's bytes: no copy
                    if chunk.WhichOneof("part") != "data":
                        raise WeightsError(f"{who} sent a second header in one stream")
                    chunk = chunk.data
                received += len(chunk)
                yield chunk
        finally:  # counted once per push, not under the lock per chunk
            counter.add(received=received)

    return codec.decode_into(data(), out, who, max_bytes)


def first_header(request_iterator):
    first = next(request_iterator, None)
    if first is None or isinstance(first, memoryview) or first.WhichOneof("part") != "header":
        return None
    return first.header


class Revocations:
    """Fingerprints revoked on the ledger, as this node's SN lists them; refreshed
    with the heartbeats so every peer call (FetchModel too) refuses them."""

    REFRESH_S = 10.0

    def __init__(self):
        self._revoked: frozenset[str] = frozenset()
        self._at = float("-inf")

    def __contains__(self, fingerprint: str) -> bool:
        return fingerprint.lower() in self._revoked

    def refresh(self, sn, now: float) -> None:
        """Re-reads the list at most every REFRESH_S (sn: an SNClient)."""
        if now - self._at < self.REFRESH_S:
            return
        self._at = now
        self._revoked = frozenset(m.fingerprint.lower() for m in sn.list_peers()
                                  if m.status == "revoked")
