"""A bounded fuzz (hypothesis) from an authenticated peer against a small live swarm.

gamma holds a valid SL certificate but is not in the swarm: while alpha and beta train
(real SN, SL nodes and sidecars over mTLS), it sends well-formed messages with random
fields (generated from the protos' descriptors: any round, from far past to far future,
random digests, NaN votes, bogus endpoints) and raw garbage bytes to every method of the
SL peer service and the SN API, and to methods that do not exist. No node may crash, no
handler may fail with an unexpected error (UNKNOWN), the two nodes keep merging, and
they end with identical weights.

Left out on purpose: MarkFinished (a registered member may end its training: that is
its right, not garbage) and check-ins for rounds about to seal (a participant that
then stalls is the Byzantine tests' case, test_byzantine_swarm.py).
"""

from __future__ import annotations

import json
import time
from collections import Counter

import grpc
import pytest
from google.protobuf.descriptor import FieldDescriptor as FD
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sl_node.round_driver import OUTCOMES_FILE, read_outcomes
from swarm.protos import sl_api_pb2, sn_api_pb2
from swarm_testing import free_port, run_sl_argv

SIDECAR = "tests/sl/digits_numpy_sidecar.py"
SL_SERVICE = sl_api_pb2.DESCRIPTOR.services_by_name["SwarmLearningPeer"]
SN_SERVICE = sn_api_pb2.DESCRIPTOR.services_by_name["SwarmNetwork"]
LEDGER_SERVICE = sn_api_pb2.DESCRIPTOR.services_by_name["LedgerPeer"]
SKIPPED = {"MarkFinished"}
CALL_TIMEOUT_S = 1.0
FAR_AHEAD = 1000  # CheckIn only this far ahead: never a participant of a real round

ROUNDS = st.one_of(st.integers(0, 300), st.sampled_from([2**31, 2**32 - 1, 2**63 - 1]))
ENDPOINTS = st.sampled_from(["127.0.0.1:1", "0.0.0.0:0", "localhost:99999", "::::",
                             "10.255.255.1:30305", "a" * 300, "", "127.0.0.1:-5",
                             "unix:///tmp/x", "[::1]:30305"])
INT_RANGES = {FD.TYPE_UINT64: (0, 2**64 - 1), FD.TYPE_UINT32: (0, 2**32 - 1),
              FD.TYPE_INT64: (-2**63, 2**63 - 1), FD.TYPE_INT32: (-2**31, 2**31 - 1)}


def _scalar(field) -> st.SearchStrategy:
    if field.type in INT_RANGES:
        lo, hi = INT_RANGES[field.type]
        if "round" in field.name and lo == 0 and hi >= 2**63:
            return ROUNDS
        return st.one_of(st.integers(max(lo, 0), min(hi, 100)), st.integers(lo, hi))
    if field.type == FD.TYPE_DOUBLE:
        return st.floats()  # NaN and infinities included
    if field.type == FD.TYPE_FLOAT:
        return st.floats(width=32)
    if field.type == FD.TYPE_BOOL:
        return st.booleans()
    if field.type == FD.TYPE_STRING:
        return ENDPOINTS if "endpoint" in field.name else st.text(max_size=40)
    if field.type == FD.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.binary(min_size=32, max_size=32))
    if field.type == FD.TYPE_ENUM:
        return st.integers(0, 20)  # unknown values too (proto3 enums are open)
    if field.type == FD.TYPE_MESSAGE:
        return st.deferred(lambda: message(field.message_type))
    return st.nothing()


def _is_map(field) -> bool:
    return field.type == FD.TYPE_MESSAGE and field.message_type.GetOptions().map_entry


def message(descriptor) -> st.SearchStrategy:
    """Messages of this type with any subset of their fields set to random values."""
    cls = GetMessageClass(descriptor)
    strategies = {}
    for field in descriptor.fields:
        if _is_map(field):  # map<K, V>: a dict of random keys and values
            entry = field.message_type.fields_by_name
            value = st.dictionaries(_scalar(entry["key"]), _scalar(entry["value"]), max_size=6)
        else:
            value = _scalar(field)
            if field.is_repeated:
                value = st.lists(value, max_size=6)
        strategies[field.name] = value

    def build(values: dict):
        msg = cls()
        for name, value in values.items():
            field = descriptor.fields_by_name[name]
            if _is_map(field):
                target = getattr(msg, name)
                for key, item in value.items():
                    if field.message_type.fields_by_name["value"].type == FD.TYPE_MESSAGE:
                        target[key].CopyFrom(item)
                    else:
                        target[key] = item
            elif field.is_repeated:
                target = getattr(msg, name)
                if field.type == FD.TYPE_MESSAGE:
                    for item in value:
                        target.add().CopyFrom(item)
                else:
                    target.extend(value)
            elif field.type == FD.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(value)
            else:
                setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries({}, optional=strategies).map(build)


def _request(method) -> st.SearchStrategy:
    """(service path, method, serialized requests): messages of its type, or garbage."""
    wellformed = message(method.input_type).map(lambda m: m.SerializeToString())
    payload = st.one_of(wellformed, st.binary(max_size=200))
    count = (st.integers(0, 4) if method.client_streaming else st.just(1))
    return st.tuples(st.just(method), st.lists(payload, min_size=1, max_size=4), count)


def _methods(service):
    return [m for m in service.methods if m.name not in SKIPPED]


def _targets() -> st.SearchStrategy:
    """(target, service, (method or None, payloads, stream length))."""
    sl = st.tuples(st.sampled_from(["sl0", "sl1"]), st.just(SL_SERVICE.full_name),
                   st.one_of(*[_request(m) for m in _methods(SL_SERVICE)]))
    sn = st.tuples(st.just("sn"), st.just(SN_SERVICE.full_name),
                   st.one_of(*[_request(m) for m in _methods(SN_SERVICE)]))
    ledger = st.tuples(st.just("sn-p2p"), st.just(LEDGER_SERVICE.full_name),
                       st.one_of(*[_request(m) for m in _methods(LEDGER_SERVICE)]))
    bogus = st.tuples(st.sampled_from(["sn", "sl0", "sl1"]), st.sampled_from(
        [SL_SERVICE.full_name, SN_SERVICE.full_name, "swarm.NoSuchService"]),
        st.tuples(st.none(), st.lists(st.binary(max_size=100), min_size=1, max_size=1),
                  st.just(1)))
    return st.one_of(sl, sn, sl, sn, ledger, bogus)


class Fuzzer:
    """Sends one generated call and tallies how each ended."""

    def __init__(self, channels: dict[str, grpc.Channel]):
        self.channels = channels
        self.codes: Counter = Counter()
        self.unexpected: list[str] = []
        self.by_method: Counter = Counter()  # calls that returned OK, per method

    def call(self, target: str, service: str, method, payloads: list[bytes],
             count: int, wellformed: bool) -> None:
        channel = self.channels[target]
        path = f"/{service}/{method.name if method else 'NoSuchMethod'}"
        try:
            if method is None or not (method.client_streaming or method.server_streaming):
                channel.unary_unary(path)(payloads[0], timeout=CALL_TIMEOUT_S)
            elif method.client_streaming:
                channel.stream_unary(path)(iter(payloads[:max(count, 1)] if count else []),
                                           timeout=CALL_TIMEOUT_S)
            else:
                stream = channel.unary_stream(path)(payloads[0], timeout=CALL_TIMEOUT_S)
                for index, _ in enumerate(stream):
                    if index > 3:
                        stream.cancel()
                        break
            self.codes["OK"] += 1
            self.by_method[path] += 1
        except grpc.RpcError as error:
            code = error.code()
            self.codes[code.name] += 1
            # UNKNOWN is an exception a handler did not expect; INTERNAL only for bytes
            # that are no message of the method's type.
            if code == grpc.StatusCode.UNKNOWN or (code == grpc.StatusCode.INTERNAL
                                                   and wellformed):
                self.unexpected.append(f"{path}: {code.name}: {error.details()}")


def _is_parked_check_in(method, payload: bytes) -> bool:
    """A well-formed CheckIn for a round that may seal soon (see the module's note)."""
    if method is None or method.name != "CheckIn":
        return False
    try:
        request = sn_api_pb2.CheckInRequest.FromString(payload)
    except Exception:  # garbage: the SN refuses it before anything else
        return False
    return request.round < FAR_AHEAD


@pytest.mark.slow
def test_an_authenticated_peer_sending_random_messages_stops_nothing(sites, processes,
                                                                    start_sn, tmp_path):
    alpha, beta, gamma = sites
    targets = _targets()
    sn = start_sn(alpha, None, "--round-grace", "1")
    ports = [free_port(), free_port()]
    nodes = []
    for index, site in enumerate((alpha, beta)):
        env = {"NODE_INDEX": str(index), "NUM_NODES": "2", "MAX_EPOCHS": "8",
               "MIN_PEERS": "2", "SYNC_FREQUENCY": "4",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(processes(run_sl_argv(site, sn, tmp_path / f"sl-{index}", ports[index],
                                           SIDECAR, env, "--peer-timeout", "2")))
    nodes[0].wait_for("round 1 merged", timeout_s=120)

    tls = gamma.material("sl")  # valid, trusted, never part of the swarm
    channels = {"sn": tls.secure_channel(sn.target, peer_role="sn"),
                "sn-p2p": tls.secure_channel(f"127.0.0.1:{sn.p2p_port}", peer_role="sn")}
    for index, port in enumerate(ports):
        channels[f"sl{index}"] = tls.secure_channel(f"127.0.0.1:{port}", peer_role="sl")
    fuzzer = Fuzzer(channels)
    @settings(max_examples=400, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(targets)
    def fuzz(case):
        target, service, (method, payloads, count) = case
        if _is_parked_check_in(method, payloads[0]):
            return
        wellformed = method is not None and _parses(method, payloads)
        fuzzer.call(target, service, method, payloads, count, wellformed)
        for proc in (sn.proc, *nodes):
            assert proc.proc.poll() in (None, 0), proc.output[-3000:]  # 0: training over

    started = time.time()
    fuzz()
    fuzzed_until = time.time()
    for channel in channels.values():
        channel.close()
    print(f"fuzz: {sum(fuzzer.codes.values())} calls in {fuzzed_until - started:.1f} s: "
          f"{dict(fuzzer.codes)}; OK per method: {dict(fuzzer.by_method)}")
    assert not fuzzer.unexpected, fuzzer.unexpected[:10]
    assert sum(fuzzer.codes.values()) >= 300

    for proc in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-3000:]
    assert sn.proc.proc.poll() is None
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text())
               for i in range(2)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"], results
    for index in range(2):
        merged = [r for r in read_outcomes(tmp_path / f"sl-{index}" / OUTCOMES_FILE)
                  if r["status"] == "merged"]
        during = [r for r in merged if started <= r["finished_at"] <= fuzzed_until]
        assert len(during) >= 3, (len(during), len(merged))  # kept merging meanwhile
        assert not any(r["diverged"] for r in merged)


def _parses(method, payloads: list[bytes]) -> bool:
    cls = GetMessageClass(method.input_type)
    try:
        for payload in payloads:
            cls.FromString(payload)
    except Exception:
        return False
    return True
