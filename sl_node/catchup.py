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
from swarm.tensors import Assembler, Layout, WeightsError, digest_from_hashes, verify_blocks

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
    expected = bytes(status.latest_merged_digest)
    errors = []
    for participant in info.participants:
        if participant.node_id == node_id:
            continue
        try:
            model = _fetch_from(channel_for(participant.endpoint), participant.endpoint,
                                status.latest_merged_round, layout, counter, max_model_bytes)
        except grpc.RpcError as error:
            errors.append(f"{participant.node_id}: {error.details()}")
            continue
        except WeightsError as error:
            errors.append(f"{participant.node_id}: {error}")
            continue
        if model.digest != expected:
            errors.append(f"{participant.node_id}: digest differs from the ledger's")
            continue
        log.info("loaded the merged model of round %d from %s", model.round, participant.node_id)
        return model
    raise CatchUpError(f"could not load the merged model of round "
                       f"{status.latest_merged_round}: "
                       + "; ".join(errors or ["no peer holds it"]))


def _fetch_from(channel: grpc.Channel, endpoint: str, round_number: int, layout: Layout,
                counter, max_model_bytes: int) -> MergedModel:
    stub = pb_grpc.SwarmLearningPeerStub(channel)
    stream = stub.FetchModel(pb.FetchRequest(round=round_number), timeout=300)
    header = next(stream).header
    theirs = Layout.from_json(header.layout_json)
    if theirs.fingerprint != layout.fingerprint:
        raise WeightsError("the swarm's model has another layout than this sidecar's")
    assembler = Assembler(header.total_bytes, limit_bytes=max_model_bytes, who=endpoint)
    for chunk in stream:
        assembler.add(chunk.data)
        counter.add(received=len(chunk.data))
    data = assembler.finish()
    hashes = list(header.block_hashes)
    verify_blocks(data, 0, hashes, endpoint)
    digest = digest_from_hashes(theirs.fingerprint, hashes)
    flat = np.frombuffer(data, dtype=theirs.wire)
    return MergedModel(header.round, theirs, flat, hashes, digest)
