"""LocalChannel against a real gRPC server on a unix socket: the happy path, and the
clear errors for a missing address, a missing socket and a misbehaving SL node."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from swarm.callback import LocalChannel, LocalChannelError, parse_params
from swarm.protos import local_api_pb2 as pb
from swarm.tensors import Layout

PARAMS = parse_params(syncFrequency=1, minPeers=2)


def _model():
    # 300k float32 elements: more than one 1 MiB chunk each way.
    weights = [np.arange(300_000, dtype=np.float32).reshape(600, 500) / 1e5,
               np.ones(7, np.float32)]
    layout = Layout.from_weights(weights)
    return weights, layout, layout.flatten(weights)


def test_hello_sync_and_finish_round_trip(sl_node):
    standin = sl_node()
    weights, layout, flat = _model()
    with LocalChannel() as channel:
        reply = channel.hello(PARAMS, layout, "numpy")
        assert reply.node_id == "standin-1"
        result, merged = channel.sync(flat, 7, "begin")
        assert (result.round, result.participants, result.swarm_done) == (1, 2, False)
        np.testing.assert_array_equal(merged, standin.received[0].answer)
        result, final = channel.finish(flat, 7, "snapshot")
        assert result.swarm_done
        np.testing.assert_array_equal(final, standin.final())
    hello = standin.hellos[0]
    assert hello.framework == "numpy" and hello.layout_json == layout.to_json()
    assert hello.config_json == PARAMS.to_config_json()
    begin, finish = standin.received
    assert begin.header.kind == pb.SyncHeader.BEGIN and begin.header.weight == 7
    assert begin.header.total_bytes == flat.nbytes
    np.testing.assert_array_equal(begin.flat, flat)
    assert finish.header.checkin_model_on_train_end == "snapshot"


@pytest.mark.parametrize("fault, message", [
    ("more", "sent more bytes than announced"),
    ("fewer", "stream ended early: got"),
    ("wrong_size", "announces 1200036 bytes of merged weights, but this model's flat "
                   "vector has 1200028 bytes"),
    ("no_result", "expected a SyncResult first, got data"),
    ("abort", "Sync: INVALID_ARGUMENT: stand-in refuses these weights"),
])
def test_a_misbehaving_sl_node_gives_a_clear_error(sl_node, fault, message):
    sl_node(fault=fault)
    _, layout, flat = _model()
    with LocalChannel() as channel:
        channel.hello(PARAMS, layout, "numpy")
        with pytest.raises(LocalChannelError) as error:
            channel.sync(flat, 1)
    assert message in str(error.value)
    assert "SL node unix://" in str(error.value)


def test_missing_address_says_how_to_run(monkeypatch):
    monkeypatch.delenv("SWARM_SL_ADDRESS", raising=False)
    with pytest.raises(LocalChannelError) as error:
        LocalChannel()
    assert "SWARM_SL_ADDRESS is not set" in str(error.value)
    assert "run this program through run-sl, or set SWARM_SL_ADDRESS" in str(error.value)


def test_socket_that_never_appears(tmp_path):
    channel = LocalChannel(f"unix://{tmp_path}/none.sock", connect_timeout_s=0.3)
    with pytest.raises(LocalChannelError, match="none.sock did not appear within"):
        channel.hello(PARAMS, _model()[1], "numpy")


def test_waits_for_a_late_sl_node(sl_node, tmp_path, monkeypatch):
    started = {}

    def late():
        time.sleep(0.7)
        started["standin"] = sl_node()

    thread = threading.Thread(target=late)
    thread.start()
    # The address is known before the server exists: it binds sl0.sock.
    with LocalChannel(f"unix://{tmp_path}/sl0.sock", connect_timeout_s=20) as channel:
        assert channel.hello(PARAMS, _model()[1], "numpy").node_id == "standin-1"
    thread.join()
    assert len(started["standin"].hellos) == 1


def test_an_sl_node_that_went_away_fails_the_round_at_once(sl_node):
    standin = sl_node()
    _, layout, flat = _model()
    with LocalChannel() as channel:
        channel.hello(PARAMS, layout, "numpy")
        standin.server.stop(grace=None).wait()
        started = time.monotonic()
        with pytest.raises(LocalChannelError, match="Sync: the SL node is not reachable"):
            channel.sync(flat, 1)
        assert time.monotonic() - started < 10
