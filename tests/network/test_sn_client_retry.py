"""SNClient rides out an unreachable SN on idempotent calls, and only on those."""

from __future__ import annotations

import logging
import threading
import time
from concurrent import futures

import grpc
import pytest

from swarm.network.sn_client import SNClient, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc

from sn_node.service import refuse
from swarm_testing import free_port


class FakeSN(pb_grpc.SwarmNetworkServicer):
    """Answers GetStatus; Heartbeat fails as told, one scripted failure per call."""

    def __init__(self, failures: list[tuple[grpc.StatusCode, str]]):
        self.failures = list(failures)
        self.heartbeats = 0

    def GetStatus(self, request, context):
        return pb.SwarmStatus(sn_node_id="fake/sn-1")

    def Heartbeat(self, request, context):
        self.heartbeats += 1
        if self.failures:
            code, reason = self.failures.pop(0)
            refuse(context, code, reason, f"scripted {reason}")
        return pb.HeartbeatReply(last_sealed_round=7)


def serve(site, port: int, servicer: FakeSN) -> grpc.Server:
    server = grpc.server(futures.ThreadPoolExecutor(4))
    pb_grpc.add_SwarmNetworkServicer_to_server(servicer, server)
    server.add_secure_port(f"127.0.0.1:{port}", site.material("sn").server_credentials())
    server.start()
    return server


@pytest.fixture
def servers():
    started: list[grpc.Server] = []
    yield started
    for server in started:
        server.stop(0)


def test_an_sn_that_comes_back_is_found_and_the_outage_logged_once(sites, servers, caplog):
    port = free_port()
    threading.Timer(1.5, lambda: servers.append(serve(sites[0], port, FakeSN([])))).start()
    caplog.set_level(logging.WARNING, logger="swarm.network.sn")
    with SNClient(f"127.0.0.1:{port}", sites[0].material("sl"), timeout_s=2, retry_s=30) as sn:
        started = time.monotonic()
        assert sn.status().sn_node_id == "fake/sn-1"
        assert 1.4 < time.monotonic() - started < 15
        assert sn.heartbeat().last_sealed_round == 7
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is unreachable" in m for m in messages) == 1, messages
    assert sum("answers again" in m for m in messages) == 1, messages


def test_the_retry_budget_is_bounded(sites):
    port = free_port()
    with SNClient(f"127.0.0.1:{port}", sites[0].material("sl"), timeout_s=2, retry_s=1) as sn:
        started = time.monotonic()
        with pytest.raises(SwarmNetworkError, match="nothing listens") as error:
            sn.heartbeat()
        assert error.value.code == grpc.StatusCode.UNAVAILABLE
        assert 0.9 < time.monotonic() - started < 6


def test_calls_that_are_not_idempotent_fail_at_once(sites):
    port = free_port()
    with SNClient(f"127.0.0.1:{port}", sites[0].material("sn"), timeout_s=2, retry_s=60) as sn:
        started = time.monotonic()
        with pytest.raises(SwarmNetworkError):
            sn.join_network("0x" + "11" * 20, "127.0.0.1:1")
        assert time.monotonic() - started < 5


def test_typed_refusals_are_not_retried_but_a_busy_ledger_is(sites, servers):
    port = free_port()
    fake = FakeSN([(grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
                   (grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE"),
                   (grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY"),
                   (grpc.StatusCode.FAILED_PRECONDITION, "INACTIVE")])
    servers.append(serve(sites[0], port, fake))
    with SNClient(f"127.0.0.1:{port}", sites[0].material("sl"), timeout_s=2, retry_s=30) as sn:
        with pytest.raises(SwarmNetworkError) as busy:
            sn.heartbeat()  # two LEDGER_UNAVAILABLE retried, then BUSY given up on
        assert busy.value.reason == pb.BUSY and fake.heartbeats == 3
        with pytest.raises(SwarmNetworkError) as inactive:
            sn.heartbeat()
        assert inactive.value.reason == pb.INACTIVE and fake.heartbeats == 4
        assert sn.heartbeat().last_sealed_round == 7


def test_close_ends_a_retry_at_once(sites):
    port = free_port()
    sn = SNClient(f"127.0.0.1:{port}", sites[0].material("sl"), timeout_s=2, retry_s=120)
    threading.Timer(1.0, sn.close).start()
    started = time.monotonic()
    with pytest.raises(SwarmNetworkError):
        sn.status()
    assert time.monotonic() - started < 6
