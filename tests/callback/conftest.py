"""A stand-in SL node: a real SwarmLearningLocal gRPC server on a unix socket.

It stands at the edge of the callback tests in place of the real SL node: it records
every Hello, Sync and Finish, answers each sync with a "merge" (the mean of what it
received and a fixed peer vector), and after `done_after` syncs, or on Finish,
answers swarm_done with a fixed final vector. `fault` makes it misbehave on purpose.
"""

from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import numpy as np
import pytest

from swarm.protos import local_api_pb2 as pb
from swarm.protos import local_api_pb2_grpc as pb_grpc
from swarm.tensors import Layout, iter_chunks


@dataclass
class Received:
    call: str  # "Sync" | "Finish"
    header: pb.SyncHeader
    flat: np.ndarray
    answer: np.ndarray | None
    swarm_done: bool


@dataclass
class StandInSL(pb_grpc.SwarmLearningLocalServicer):
    done_after: int | None = None  # syncs (BEGIN included) before swarm_done
    fault: str | None = None  # more | fewer | wrong_size | abort | no_result
    hellos: list = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    metrics: list = field(default_factory=list)  # MetricsReports, in order
    layout: Layout | None = None
    address: str = ""
    server: grpc.Server | None = None

    def __post_init__(self):
        self._lock = threading.Lock()

    # Deterministic vectors the size of the model, in its wire dtype.
    def peer(self) -> np.ndarray:
        return np.linspace(-0.5, 0.5, self.layout.size).astype(self.layout.wire)

    def final(self) -> np.ndarray:
        return (np.cos(np.arange(self.layout.size)) * 0.1).astype(self.layout.wire)

    @property
    def syncs(self) -> list[Received]:
        return [r for r in self.received if r.call == "Sync"]

    def Hello(self, request, context):
        self.layout = Layout.from_json(request.layout_json)
        self.hellos.append(request)
        return pb.HelloReply(node_id="standin-1", min_peers=2,
                             config_json=request.config_json)

    def Sync(self, request_iterator, context):
        return self._round("Sync", request_iterator, context)

    def Finish(self, request_iterator, context):
        return self._round("Finish", request_iterator, context)

    def ReportMetrics(self, request, context):
        self.metrics.append(request)
        return pb.MetricsAck()

    def _round(self, call, request_iterator, context):
        header = None
        chunks = []
        for message in request_iterator:
            if header is None:
                assert message.WhichOneof("part") == "header"
                header = message.header
            else:
                chunks.append(message.data)
        data = b"".join(chunks)
        assert len(data) == header.total_bytes
        flat = np.frombuffer(data, dtype=self.layout.wire).copy()
        with self._lock:
            done = call == "Finish" or (
                self.done_after is not None and len(self.syncs) + 1 >= self.done_after)
            answer = self.final() if done else ((flat + self.peer()) / 2).astype(self.layout.wire)
            self.received.append(Received(call, header, flat, answer, done))
            round_no = len(self.received)
        if self.fault == "abort":
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "stand-in refuses these weights")
        if self.fault == "no_result":
            yield pb.WeightChunk(data=b"\0" * 8)
            return
        payload = answer.tobytes()
        announced = len(payload) + (8 if self.fault == "wrong_size" else 0)
        if self.fault == "more":
            payload += b"\0" * 8
        elif self.fault == "fewer":
            payload = payload[:-8]
        yield pb.WeightChunk(result=pb.SyncResult(
            round=round_no, participants=2, merged_digest=b"\x01" * 32,
            total_bytes=announced, swarm_done=done))
        for chunk in iter_chunks(payload, chunk_bytes=1 << 16):
            yield pb.WeightChunk(data=bytes(chunk))


@pytest.fixture
def sl_node(tmp_path, monkeypatch):
    """start(**options) -> a running StandInSL whose address is in SWARM_SL_ADDRESS;
    MODEL_DIR points into tmp_path. Servers stop at the end of the test."""
    servers = []

    def start(**options) -> StandInSL:
        socket = tmp_path / f"sl{len(servers)}.sock"
        assert len(str(socket)) < 100, "unix socket paths are limited to ~108 bytes"
        standin = StandInSL(**options)
        standin.address = f"unix://{socket}"
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_SwarmLearningLocalServicer_to_server(standin, server)
        server.add_insecure_port(standin.address)
        server.start()
        standin.server = server
        servers.append(server)
        monkeypatch.setenv("SWARM_SL_ADDRESS", standin.address)
        return standin

    monkeypatch.setenv("MODEL_DIR", str(tmp_path / "model"))
    monkeypatch.delenv("SWARM_LOOPBACK", raising=False)
    yield start
    for server in servers:
        server.stop(grace=None)
