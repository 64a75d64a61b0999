"""A typed client of the SN API, used by SL nodes, SWCI tools and joining SN nodes."""

from __future__ import annotations

import time

import grpc

from swarm.identity import TlsMaterial, explain_connection_failure
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc


Reason = pb.Reason  # why an SN refused a call: decide on these, never on message text


class SwarmNetworkError(RuntimeError):
    """An SN API call failed; the message names the SN and what went wrong.

    `reason` is the SN's typed Reason (REASON_UNSPECIFIED when none was given, e.g.
    the SN could not be reached); `next_round` the round it says to use instead.
    """

    def __init__(self, message: str, code: grpc.StatusCode | None = None,
                 reason: int = pb.REASON_UNSPECIFIED, next_round: int | None = None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.next_round = next_round


def _reason_of(error: grpc.RpcError) -> tuple[int, int | None]:
    """The typed reason and next round an SN attached to a refusal, if any."""
    metadata = dict(error.trailing_metadata() or ())
    try:
        reason = pb.Reason.Value(metadata.get("swarm-reason", "REASON_UNSPECIFIED"))
    except ValueError:  # a newer SN's reason this client does not know
        reason = pb.REASON_UNSPECIFIED
    next_round = metadata.get("swarm-next-round")
    return reason, int(next_round) if next_round and next_round.isdigit() else None


class SNClient:
    """Talks to one SN node over mutual TLS, pinning the server to the SN role.

    Each method is one RPC; gRPC failures become SwarmNetworkError with a message a
    user can act on (what was refused and why, or why nothing could connect).
    """

    def __init__(self, target: str, tls: TlsMaterial, timeout_s: float = 10.0):
        self.target = target
        self._tls = tls
        self._timeout_s = timeout_s
        self._channel = tls.secure_channel(target, peer_role="sn")
        self._stub = pb_grpc.SwarmNetworkStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> SNClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout_s: float | None = None):
        try:
            return getattr(self._stub, method)(request, timeout=timeout_s or self._timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            if code == grpc.StatusCode.UNAVAILABLE:
                why = explain_connection_failure(self.target, self._tls, "sn", error)
            else:
                why = f"{code.name}: {error.details()}"
            reason, next_round = _reason_of(error)
            raise SwarmNetworkError(f"SN {self.target} {method}: {why}", code, reason,
                                    next_round) from None

    def wait_ready(self, timeout_s: float = 30.0) -> pb.SwarmStatus:
        """Retries GetStatus until the SN answers (it may still be starting)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self.status()
            except SwarmNetworkError as error:
                if error.code != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def register(self, endpoint: str) -> pb.Member:
        return self._call("Register", pb.RegisterRequest(endpoint=endpoint))

    def heartbeat(self) -> pb.HeartbeatReply:
        return self._call("Heartbeat", pb.HeartbeatRequest())

    def list_peers(self, role: str = "") -> list[pb.Member]:
        return list(self._call("ListPeers", pb.ListPeersRequest(role=role)).members)

    def configure(self, min_peers: int, config_json: str = "{}") -> pb.SessionConfig:
        return self._call("Configure", pb.SessionConfig(min_peers=min_peers,
                                                        config_json=config_json))

    def check_in(self, round_number: int, weight: int, digest: bytes) -> pb.CheckInReply:
        return self._call("CheckIn", pb.CheckInRequest(round=round_number, weight=weight,
                                                       digest=digest))

    def wait_round(self, round_number: int, timeout_s: float,
                   until_check_in: bool = False) -> pb.RoundInfo:
        """Blocks until the round is sealed or timeout_s passes (RoundInfo.sealed says which);
        with `until_check_in`, also until anyone has checked in for the round."""
        request = pb.WaitRoundRequest(round=round_number, timeout_ms=int(timeout_s * 1000),
                                      until_check_in=until_check_in)
        return self._call("WaitRound", request, timeout_s=timeout_s + self._timeout_s)

    def commit_merged(self, round_number: int, digest: bytes) -> pb.CommitMergedReply:
        return self._call("CommitMerged", pb.CommitMergedRequest(round=round_number,
                                                                 digest=digest))

    def submit_receipts(self, round_number: int, phase: int, bits: bytes,
                        remaining_s: float = 0.0) -> None:
        self._call("SubmitReceipts", pb.ReceiptsRequest(
            round=round_number, phase=phase, bits=bits,
            remaining_ms=int(max(0.0, remaining_s) * 1000)))

    def wait_receipts(self, round_number: int, phase: int, timeout_s: float
                      ) -> tuple[bool, dict[int, bytes]]:
        """(frozen, index -> bitmap): the set the SN froze for everyone."""
        reply = self._call("WaitReceipts", pb.WaitReceiptsRequest(
            round=round_number, phase=phase, timeout_ms=int(timeout_s * 1000)),
            timeout_s=timeout_s + self._timeout_s)
        return reply.frozen, {r.index: bytes(r.bits) for r in reply.receipts}

    def mark_finished(self) -> pb.SwarmStatus:
        return self._call("MarkFinished", pb.MarkFinishedRequest())

    def status(self) -> pb.SwarmStatus:
        return self._call("GetStatus", pb.StatusRequest())

    def revoke(self, fingerprint: str, reason: str) -> pb.RevokeReply:
        return self._call("Revoke", pb.RevokeRequest(fingerprint=fingerprint, reason=reason))

    def join_network(self, account_address: str, endpoint: str) -> pb.JoinReply:
        return self._call("JoinNetwork", pb.JoinRequest(account_address=account_address,
                                                        endpoint=endpoint))
