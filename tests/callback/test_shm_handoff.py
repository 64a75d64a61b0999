"""The hand-off through shared memory: LocalChannel against the real local service.

The SL node behind the service is a stand-in (the edge of these tests): it records
each update and answers a fixed "merge" of it, so the region path and the socket
path can be compared byte for byte, and calls can be held open on purpose.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from concurrent import futures
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from sl_node.local_service import SwarmLearningLocalServicer
from swarm.callback import LocalChannel, parse_params
from swarm.protos import local_api_pb2 as lpb
from swarm.tensors import Layout
from swarm.tensors.region import DATA_OFFSET, DIR_ENV, RegionError, SharedRegion

PARAMS = parse_params(syncFrequency=1, minPeers=1)


def _model(elements: int = 300_007):
    weights = [np.linspace(-1, 1, elements, dtype=np.float32).reshape(-1, 1),
               np.arange(5, dtype=np.int64)]
    layout = Layout.from_weights(weights)
    return layout, layout.flatten(weights)


class StandInNode:
    """What the local service calls: layout, hello, sync, finish."""

    def __init__(self):
        self.layout = None
        self.updates: list[np.ndarray] = []
        self.hold = threading.Event()  # set: sync waits for `release`
        self.release = threading.Event()
        self.entered = threading.Event()

    def hello(self, config_json, layout_json, framework):
        self.layout = Layout.from_json(layout_json)
        return lpb.HelloReply(node_id="standin", min_peers=1)

    def sync(self, flat, weight, begin):
        self.entered.set()
        if self.hold.is_set():
            self.release.wait(30)
        self.updates.append(np.array(flat))
        merged = (flat.astype(np.float64) / 3 + len(self.updates)).astype(self.layout.wire)
        result = lpb.SyncResult(round=len(self.updates), participants=2,
                                total_bytes=merged.nbytes)
        return result, SimpleNamespace(flat=merged)

    def finish(self, flat, weight, mode):
        return self.sync(flat, weight, begin=False)


@pytest.fixture
def local_service(tmp_path):
    """start(region_dir=None) -> (node, address): the real servicer on a unix socket."""
    servers = []

    def start(region_dir=None):
        node = StandInNode()
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        SwarmLearningLocalServicer(node, region_dir=region_dir).add_to_server(server)
        address = f"unix://{tmp_path}/sl{len(servers)}.sock"
        server.add_insecure_port(address)
        server.start()
        servers.append(server)
        return node, address

    yield start
    for server in servers:
        server.stop(grace=None)


def _regions() -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith("swarm-region-")}


def test_region_and_socket_give_bit_identical_merged_weights(local_service, caplog):
    layout, flat = _model()
    answers = {}
    for path in ("region", "socket"):
        node, address = local_service()
        before = _regions()
        with caplog.at_level(logging.INFO, "swarm"), \
                LocalChannel(address, shared_memory=path == "region") as channel:
            channel.hello(PARAMS, layout, "numpy")
            assert channel.path == path
            # The region's name is gone once the SL node has mapped it.
            assert _regions() <= before
            merged = []
            for step in range(3):
                update = flat + np.float32(step)
                result, data = channel.sync(update, 1)
                assert channel.last_handoff.path == path and result.round == step + 1
                np.testing.assert_array_equal(node.updates[-1], update)
                merged.append(np.array(data))
            result, final = channel.finish(flat, 1, "snapshot")
            merged.append(np.array(final))
        answers[path] = merged
    for ours, theirs in zip(answers["region"], answers["socket"]):
        assert ours.tobytes() == theirs.tobytes()
    assert "Weights go to the SL node through shared memory" in caplog.text
    assert "the sidecar's weights come through shared memory" in caplog.text


def test_a_vector_flattened_into_the_send_buffer_goes_without_a_copy(local_service):
    layout, flat = _model()
    node, address = local_service()
    with LocalChannel(address) as channel:
        channel.hello(PARAMS, layout, "numpy")
        out = channel.send_buffer().view(layout.wire)
        out[:] = flat
        _, merged = channel.sync(out, 1)
        np.testing.assert_array_equal(node.updates[-1], flat)
        # The merged weights come back in place, read-only for the sidecar.
        assert np.shares_memory(merged, out) and not merged.flags.writeable


def test_an_sl_node_that_cannot_see_the_region_falls_back_to_the_socket(
        local_service, tmp_path, caplog):
    elsewhere = tmp_path / "other-shm"
    elsewhere.mkdir()
    node, address = local_service(region_dir=elsewhere)  # as a container with its own /dev/shm
    layout, flat = _model()
    with caplog.at_level(logging.INFO, "swarm"), LocalChannel(address) as channel:
        reply = channel.hello(PARAMS, layout, "numpy")
        assert not reply.region_accepted and "does not exist here" in reply.region_refused
        assert channel.path == "socket"
        _, merged = channel.sync(flat, 1)
        np.testing.assert_array_equal(node.updates[-1], flat)
        assert merged.nbytes == flat.nbytes
    assert "The SL node cannot map this program's shared memory" in caplog.text
    assert "weights go over the socket" in caplog.text


def test_no_shared_memory_on_the_sidecar_side_falls_back(local_service, tmp_path,
                                                         monkeypatch, caplog):
    monkeypatch.setenv(DIR_ENV, str(tmp_path / "no-such-dir"))
    node, address = local_service()
    layout, flat = _model()
    with caplog.at_level(logging.INFO, "swarm"), LocalChannel(address) as channel:
        channel.hello(PARAMS, layout, "numpy")
        assert channel.path == "socket"
        channel.sync(flat, 1)
    assert "No shared memory for the weights" in caplog.text


# ---- bad headers: a clear error, and the node keeps serving ----------------------------

def _raw_calls(address):
    channel = grpc.insecure_channel(address)
    stub = channel.unary_unary("/swarm.local.SwarmLearningLocal/Hello",
                               request_serializer=lpb.HelloRequest.SerializeToString,
                               response_deserializer=lpb.HelloReply.FromString)
    sync = channel.stream_stream("/swarm.local.SwarmLearningLocal/Sync",
                                 request_serializer=lpb.WeightChunk.SerializeToString,
                                 response_deserializer=lpb.WeightChunk.FromString)
    return channel, stub, sync


def _sync(sync, region, seq, offset=DATA_OFFSET, length=None, extra=(), control=None):
    length = region.data_bytes if length is None else length
    region.up_seq = seq if control is None else control
    header = lpb.SyncHeader(weight=1, total_bytes=region.data_bytes,
                            region=lpb.RegionRef(offset=offset, length=length, seq=seq))
    replies = list(sync(iter([lpb.WeightChunk(header=header), *extra]), timeout=30))
    return replies[0].result


@pytest.mark.parametrize("fault, message", [
    (dict(offset=DATA_OFFSET + 8), "offset 4104 is not a 64-byte aligned offset"),
    (dict(offset=0), "offset 0 is not a 64-byte aligned offset at or past the control page"),
    (dict(offset=DATA_OFFSET + 64), "are outside the"),
    (dict(offset=1 << 62), "are outside the"),
    (dict(length=8), "the update in the region has 8 bytes, the model layout has"),
    (dict(seq=1), "sync number 1 is not after the last one (1): a stale or repeated call"),
    (dict(seq=0), "sync number 0 is not after the last one"),
    (dict(seq=2, control=7), "control page holds update 7, the call says 2"),
    (dict(seq=2, extra=[lpb.WeightChunk(data=b"x")]), "carries no weight chunks"),
])
def test_a_bad_region_header_is_refused_clearly_and_the_node_carries_on(
        local_service, fault, message):
    node, address = local_service()
    layout, flat = _model()
    region = SharedRegion.create(layout.nbytes)
    channel, hello, sync = _raw_calls(address)
    try:
        reply = hello(lpb.HelloRequest(
            config_json=PARAMS.to_config_json(), layout_json=layout.to_json(),
            framework="numpy", region=lpb.RegionOffer(name=region.name, size=region.size,
                                                      nonce=region.nonce)), timeout=30)
        region.unlink()
        assert reply.region_accepted, reply.region_refused
        data = region.array(DATA_OFFSET, flat.nbytes, layout.wire, "test")
        data[:] = flat
        assert _sync(sync, region, 1).round == 1  # a good call first
        with pytest.raises(grpc.RpcError) as error:
            _sync(sync, region, **{"seq": 2, **fault})
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in error.value.details()
        # Nothing reached the node, and it serves the next good call.
        assert len(node.updates) == 1
        data[:] = flat
        result = _sync(sync, region, 9)
        assert result.region.seq == 9 and region.down_seq == 9
        np.testing.assert_array_equal(
            region.array(DATA_OFFSET, flat.nbytes, layout.wire, "test"),
            (flat.astype(np.float64) / 3 + 2).astype(layout.wire))
    finally:
        channel.close()
        region.unlink()
        region.close()


def test_a_region_header_without_a_region_is_refused(local_service):
    node, address = local_service()
    layout, flat = _model()
    with LocalChannel(address) as earlier:  # an earlier sidecar's region ...
        earlier.hello(PARAMS, layout, "numpy")
        assert earlier.path == "region"
    channel, hello, sync = _raw_calls(address)
    with channel:
        # ... is dropped at the next Hello that offers none.
        hello(lpb.HelloRequest(config_json=PARAMS.to_config_json(),
                               layout_json=layout.to_json(), framework="numpy"), timeout=30)
        header = lpb.SyncHeader(weight=1, total_bytes=flat.nbytes, region=lpb.RegionRef(
            offset=DATA_OFFSET, length=flat.nbytes, seq=1))
        with pytest.raises(grpc.RpcError) as error:
            list(sync(iter([lpb.WeightChunk(header=header)]), timeout=30))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "names a shared-memory region, but none was set up at Hello" in error.value.details()


def test_a_second_call_while_the_region_is_in_use_is_refused(local_service):
    node, address = local_service()
    layout, flat = _model()
    with LocalChannel(address) as channel, LocalChannel(address) as intruder:
        channel.hello(PARAMS, layout, "numpy")
        node.hold.set()
        first = futures.ThreadPoolExecutor(1).submit(channel.sync, flat, 1)
        assert node.entered.wait(30)
        # A second sidecar's Hello cannot take the region over mid-round...
        reply = intruder.hello(PARAMS, layout, "numpy")
        assert not reply.region_accepted and "still running" in reply.region_refused
        node.release.set()
        result, merged = first.result(30)
        assert result.round == 1
        np.testing.assert_array_equal(merged, (flat.astype(np.float64) / 3 + 1).astype(
            layout.wire))


def test_nan_in_the_region_is_refused_before_the_round(local_service):
    node, address = local_service()
    layout, flat = _model()
    bad = flat.copy()
    bad[17] = np.nan
    from swarm.callback import LocalChannelError
    with LocalChannel(address) as channel:
        channel.hello(PARAMS, layout, "numpy")
        with pytest.raises(LocalChannelError, match="non-finite value"):
            channel.sync(bad, 1)
        assert node.updates == []
        channel.sync(flat, 1)  # the next call is fine
    assert len(node.updates) == 1


# ---- the region file itself --------------------------------------------------------------

def test_a_region_is_private_and_checked_when_attached(tmp_path):
    region = SharedRegion.create(1000, tmp_path)
    try:
        assert stat.S_IMODE(os.stat(region.path).st_mode) == 0o600
        other = SharedRegion.attach(region.name, region.size, region.nonce, tmp_path)
        region.array(DATA_OFFSET, 1000, np.uint8, "t")[:] = 7
        assert other.array(DATA_OFFSET, 1000, np.uint8, "t").tolist() == [7] * 1000
        other.close()
        with pytest.raises(RegionError, match="does not hold the offered nonce"):
            SharedRegion.attach(region.name, region.size, bytes(16), tmp_path)
        with pytest.raises(RegionError, match="has 5096 bytes, the sidecar offered 5097"):
            SharedRegion.attach(region.name, region.size + 1, region.nonce, tmp_path)
        with pytest.raises(RegionError, match="is not one a sidecar makes"):
            SharedRegion.attach("../../etc/passwd", region.size, region.nonce, tmp_path)
        os.chmod(region.path, 0o640)
        with pytest.raises(RegionError, match="other users could read or change"):
            SharedRegion.attach(region.name, region.size, region.nonce, tmp_path)
        region.unlink()
        with pytest.raises(RegionError, match="does not exist here"):
            SharedRegion.attach(region.name, region.size, region.nonce, tmp_path)
    finally:
        region.unlink()
        region.close()


def test_the_callback_flattens_straight_into_the_region(local_service):
    # SwarmCallback asks the channel for send_array: the update is never copied to send.
    layout, flat = _model()
    node, address = local_service()
    with LocalChannel(address) as channel:
        channel.hello(PARAMS, layout, "numpy")
        out = channel.send_array(layout)
        assert out.dtype == layout.wire and np.shares_memory(out, channel.send_buffer())
        sent = layout.flatten(layout.unflatten(flat), out=out)
        assert sent is out
        channel.sync(sent, 1)
        np.testing.assert_array_equal(node.updates[-1], flat)
    with LocalChannel(address, shared_memory=False) as channel:
        channel.hello(PARAMS, layout, "numpy")
        assert channel.send_array(layout) is None  # the socket path: flatten allocates
