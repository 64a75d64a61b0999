"""Reaching the sentinel's embedded chain from another SN node.

The embedded chain lives inside the sentinel's process, so a joining SN sends its
JSON-RPC requests through the sentinel's LedgerPeer service (mTLS, SN role only).
The SN's ledger logic is the same as against any other chain: only the web3
provider differs.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter

import grpc
from web3.providers.base import JSONBaseProvider
from web3.types import RPCEndpoint, RPCResponse

from swarm.identity import TlsMaterial
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc

log = logging.getLogger("swarm.ledger.tunnel")


class LedgerTunnelProvider(JSONBaseProvider):
    """A web3 provider that carries each JSON-RPC request over the LedgerPeer gRPC service."""

    def __init__(self, target: str, tls: TlsMaterial, timeout_s: float = 30.0):
        super().__init__()
        self.target = target
        self._timeout_s = timeout_s
        self._channel = tls.secure_channel(target, peer_role="sn")
        self._stub = pb_grpc.LedgerPeerStub(self._channel)
        # Requests carried, by method, and the slowest one: what an audit costs the sentinel.
        self.requests: Counter[str] = Counter()
        self.slowest = (0.0, "")
        # web3 asks eth_chainId before every eth_call and transaction (two of three requests
        # an audit makes); a chain's id never changes, so it crosses the tunnel once.
        self._chain_id: str | None = None

    def make_request(self, method: RPCEndpoint, params) -> RPCResponse:
        payload = self.encode_rpc_request(method, params)
        if method == "eth_chainId" and self._chain_id is not None:
            return RPCResponse(jsonrpc="2.0", id=json.loads(payload)["id"], result=self._chain_id)
        response = self._send(method, payload)
        if method == "eth_chainId" and isinstance(response.get("result"), str):
            self._chain_id = response["result"]
        return response

    def _send(self, method: RPCEndpoint, payload: bytes) -> RPCResponse:
        started = time.perf_counter()
        try:
            reply = self._stub.Call(pb.LedgerRpcRequest(payload=payload), timeout=self._timeout_s)
        except grpc.RpcError as error:
            raise ConnectionError(
                f"ledger request {method} through the sentinel at {self.target} failed after "
                f"{time.perf_counter() - started:.1f} s: {error.code().name}: {error.details()}") from None
        took = time.perf_counter() - started
        self.requests[str(method)] += 1
        if took > self.slowest[0]:
            self.slowest = (took, str(method))
        log.debug("%s through %s: %.3f s", method, self.target, took)
        return self.decode_rpc_response(reply.payload)

    def is_connected(self, show_traceback: bool = False) -> bool:
        try:
            # Over the wire, never the cached id: this asks whether the sentinel answers.
            method = RPCEndpoint("eth_chainId")
            return "result" in self._send(method, self.encode_rpc_request(method, []))
        except ConnectionError:
            if show_traceback:
                raise
            return False

    def close(self) -> None:
        self._channel.close()
