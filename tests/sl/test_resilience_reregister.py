"""An SL node whose SN no longer counts it (INACTIVE, NOT_REGISTERED) registers again."""

from __future__ import annotations

import time

import grpc

from swarm.network.sn_client import Reason, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb

from sl_node.node import SLConfig, SwarmLearningNode

from swarm_testing import free_port


class ForgetfulSN:
    """Stands in for the SN client: the first heartbeats say the node is not counted."""

    def __init__(self, refusals: list[int]):
        self.refusals = list(refusals)
        self.registered = 0
        self.heartbeats = 0

    def wait_ready(self, timeout_s: float):
        return pb.SwarmStatus()

    def register(self, endpoint: str):
        self.registered += 1
        return pb.Member(node_id="alpha/sl-1", endpoint=endpoint)

    def heartbeat(self):
        self.heartbeats += 1
        if self.refusals:
            reason = self.refusals.pop(0)
            raise SwarmNetworkError(f"refused: {Reason.Name(reason)}",
                                    grpc.StatusCode.FAILED_PRECONDITION, reason)
        return pb.HeartbeatReply()

    def list_peers(self, role: str = ""):  # the revoked set, read with each heartbeat
        return []

    def close(self):
        pass


def test_heartbeats_refused_as_inactive_or_unknown_register_the_node_again(sites, tmp_path):
    port = free_port()
    config = SLConfig(host_ip="127.0.0.1", bind_ip="127.0.0.1", sn_target="127.0.0.1:1",
                      fs_port=port, data_dir=tmp_path / "sl", socket_path=tmp_path / "sl.sock")
    node = SwarmLearningNode(config, sites[0].material("sl"))
    node.sn.close()
    sn = node.sn = ForgetfulSN([pb.INACTIVE, pb.NOT_REGISTERED])
    node.start()
    try:
        deadline = time.monotonic() + 30
        while sn.registered < 3 or sn.heartbeats < 3:  # start, then once per refusal
            assert time.monotonic() < deadline, (sn.registered, sn.heartbeats)
            time.sleep(0.1)
        time.sleep(2.5)  # accepted heartbeats register nothing more
        assert sn.registered == 3
    finally:
        node.stop()
