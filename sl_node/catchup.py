"""Catch-up: load the swarm's latest merged model from a peer that holds it, checked
against the digest on the ledger (a late joiner, a restart, the end of training)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import grpc
import numpy as np

from swarm.protos import sl_api_pb2 as pb
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.tensors import Layout, WeightsError, digest_from_hashes, verify_blocks

from sl_node.exchange.gate import receive_into

log = logging.getLogger("swarm.sl")


class CatchUpError(RuntimeError):
    """No peer could hand over the latest merged model; the message says why, per peer."""


@dataclass
class MergedModel:
    round: int
    layout: Layout
    flat: np.ndarray
    hashes: list[bytes]
    digest: bytes


# Peers hand their merged model back before its commit lands on the ledger, so for a
# moment they may hold a round newer than the ledger's latest: read the status again.
FETCH_ATTEMPTS = 4
FETCH_RETRY_S = 0.5


def fetch_latest(sn, channel_for, node_id: str, layout: Layout, counter,
                 max_model_bytes: int, status) -> MergedModel:
    """The merged model of the ledger's latest merged round, from the first of its
    participants that serves it intact (re-reading the status a few times while the
    peers have moved past it); CatchUpError when none does."""
    for attempt in range(FETCH_ATTEMPTS):
        try:
            return _fetch_round(sn, channel_for, node_id, layout, counter, max_model_bytes,
                                status)
        except CatchUpError:
            if attempt == FETCH_ATTEMPTS - 1:
                raise
        time.sleep(FETCH_RETRY_S)
        status = sn.status()
    raise AssertionError("unreachable")


def _fetch_round(sn, channel_for, node_id: str, layout: Layout, counter,
                 max_model_bytes: int, status) -> MergedModel:
    info = sn.wait_round(status.latest_merged_round, 0.1)
    holders = [(p.node_id, p.endpoint) for p in info.participants]
    model, found, _ = _first_intact(channel_for, node_id, layout, counter, max_model_bytes,
                                    status.latest_merged_round,
                                    bytes(status.latest_merged_digest), holders)
    if model is None:
        raise CatchUpError(f"could not load the merged model of round "
                           f"{status.latest_merged_round}: "
                           + "; ".join(found or ["no peer holds it"]))
    return model


def fetch_agreed(channel_for, node_id: str, layout: Layout, counter, max_model_bytes: int,
                 round_number: int, digest: bytes, holders: list[tuple[str, str]],
                 within_s: float, retry_s: float = 0.2) -> tuple[MergedModel, str]:
    """Heals a divergence: the merged model of `round_number` whose digest the ledger
    agreed, from the first of `holders` ((node id, endpoint)) that serves it intact,
    and that holder's node id. Peers hold a round's model only once their own round has
    returned, so this asks again until `within_s` has passed; CatchUpError then, or at
    once when every other holder serves that round with another digest (nobody holds
    the ledger's: a made-up commit)."""
    deadline = time.monotonic() + within_s
    while True:
        model, found, settled = _first_intact(channel_for, node_id, layout, counter,
                                              max_model_bytes, round_number, digest, holders)
        if model is not None:
            return model, found
        if settled or time.monotonic() + retry_s > deadline:
            raise CatchUpError(f"could not load the agreed model of round {round_number} "
                               f"({digest.hex()[:16]}): "
                               + "; ".join(found or ["no peer holds it"]))
        time.sleep(retry_s)


class _OtherDigest(Exception):
    """The holder serves the round, with another digest than the one asked for."""


def _first_intact(channel_for, node_id, layout, counter, max_model_bytes, round_number,
                  expected: bytes, holders) -> tuple:
    """(model, holder, _) from the first holder whose model of round_number has digest
    `expected`, else (None, errors per holder, whether every holder asked served that
    round with another digest)."""
    errors, others = [], 0
    asked = [(h, e) for h, e in holders if h != node_id]
    for holder, endpoint in asked:
        try:
            model = _fetch_from(channel_for(endpoint), endpoint, round_number, layout,
                                counter, max_model_bytes, expected)
        except grpc.RpcError as error:
            errors.append(f"{holder}: {error.details()}")
            continue
        except WeightsError as error:
            errors.append(f"{holder}: {error}")
            continue
        except _OtherDigest:
            errors.append(f"{holder}: digest differs from the ledger's")
            others += 1
            continue
        log.info("loaded the merged model of round %d from %s", model.round, holder)
        return model, holder, True
    return None, errors, bool(asked) and others == len(asked)


def _fetch_from(channel: grpc.Channel, endpoint: str, round_number: int, layout: Layout,
                counter, max_model_bytes: int, expected: bytes) -> MergedModel:
    stub = pb_grpc.SwarmLearningPeerStub(channel)
    stream = stub.FetchModel(pb.FetchRequest(round=round_number), timeout=300)
    header = next(stream).header
    if header.merged_digest and bytes(header.merged_digest) != expected:
        stream.cancel()  # another model: not worth its bytes
        raise _OtherDigest()
    theirs = Layout.from_json(header.layout_json)
    if theirs.fingerprint != layout.fingerprint:
        raise WeightsError("the swarm's model has another layout than this sidecar's")
    out = np.empty(layout.nbytes, dtype=np.uint8)  # ours: the fingerprint matched
    data = receive_into(stream, header.total_bytes, endpoint, memoryview(out), counter,
                        max_model_bytes)
    hashes = list(header.block_hashes)
    verify_blocks(data, 0, hashes, endpoint)
    digest = digest_from_hashes(theirs.fingerprint, hashes)
    if digest != expected:  # the header's claim is the holder's word; this is checked
        raise _OtherDigest()
    flat = out.view(theirs.wire)
    return MergedModel(header.round, theirs, flat, hashes, digest)
