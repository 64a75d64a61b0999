"""A typed client of the SN API, used by SL nodes, SWCI tools and joining SN nodes."""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time

import grpc

from swarm.identity import TlsMaterial, explain_connection_failure
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc


log = logging.getLogger("swarm.network.sn")

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


# Calls an SN answers the same way however often they arrive (the SN keys them on the
# caller's certificate and the round, weight and digest): safe to send again after an
# outage. JoinNetwork and Revoke write without such a key and are never repeated.
IDEMPOTENT = frozenset({"GetStatus", "WaitRound", "Heartbeat", "CheckIn", "CommitMerged",
                        "Register", "Configure", "MarkFinished", "ListPeers"})
# How long idempotent calls keep trying an SN that cannot be reached (a restart, a cut link).
RETRY_BUDGET_S = 120.0
# An SN that accepts TCP connections yet fails every call refuses us (our certificate,
# its trust store) or is shutting down: worth only a short retry, not the whole budget.
# 5 s, not less: a restarted SN listens before the channel's own reconnect (backoff up to
# 1 s, later on a loaded host) reaches it, and until then calls still fail UNAVAILABLE.
LISTENING_GRACE_S = 5.0
BACKOFF_FIRST_S = 0.2
BACKOFF_MAX_S = 2.0
# The channel's own reconnect backoff (gRPC's default grows to 120 s): kept short so a
# restarted SN is found within seconds of listening again.
CHANNEL_OPTIONS = (("grpc.initial_reconnect_backoff_ms", 200),
                   ("grpc.min_reconnect_backoff_ms", 200),
                   ("grpc.max_reconnect_backoff_ms", 1000))


class _Outage:
    """When an SN stopped answering, shared by every thread using one client, so that each
    outage is logged once when it starts and once when it ends."""

    def __init__(self, target: str):
        self._target = target
        self._lock = threading.Lock()
        self._since: float | None = None

    def begin(self, why: str, budget_s: float) -> None:
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
        log.warning("SN %s is unreachable (%s); retrying for up to %.0f s", self._target,
                    why, budget_s)

    def end(self) -> None:
        with self._lock:
            since, self._since = self._since, None
        if since is not None:
            log.warning("SN %s answers again after %.1f s", self._target,
                        time.monotonic() - since)


def _listening(target: str, timeout_s: float = 1.0) -> bool:
    """Whether anything accepts a TCP connection at target (HOST:PORT)."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


class SNClient:
    """Talks to one SN node over mutual TLS, pinning the server to the SN role.

    Each method is one RPC; gRPC failures become SwarmNetworkError with a message a
    user can act on (what was refused and why, or why nothing could connect).
    Idempotent calls ride out an SN that is unreachable (UNAVAILABLE, DEADLINE_EXCEEDED):
    they retry with exponential backoff and jitter for up to `retry_s`. A refusal the SN
    gives with a typed reason is never retried. `close()` ends any retry at once.
    """

    def __init__(self, target: str, tls: TlsMaterial, timeout_s: float = 10.0,
                 retry_s: float = RETRY_BUDGET_S):
        self.target = target
        self._tls = tls
        self._timeout_s = timeout_s
        self.retry_s = retry_s
        self._closed = threading.Event()
        self._outage = _Outage(target)
        self._channel = tls.secure_channel(target, peer_role="sn", options=CHANNEL_OPTIONS)
        self._stub = pb_grpc.SwarmNetworkStub(self._channel)

    def close(self) -> None:
        self._closed.set()
        self._channel.close()

    def __enter__(self) -> SNClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method: str, request, timeout_s: float | None = None,
              retry_s: float | None = None):
        budget = self.retry_s if retry_s is None else retry_s
        if method not in IDEMPOTENT:
            budget = 0.0
        started = time.monotonic()
        listening_since: float | None = None
        backoff = BACKOFF_FIRST_S
        while True:
            try:
                reply = getattr(self._stub, method)(request,
                                                    timeout=timeout_s or self._timeout_s)
                self._outage.end()
                return reply
            except grpc.RpcError as error:
                failure = error
            except ValueError:  # the channel was closed under us: the node is stopping
                raise SwarmNetworkError(f"SN {self.target} {method}: the client is closed",
                                        grpc.StatusCode.CANCELLED) from None
            code = failure.code()
            reason, next_round = _reason_of(failure)
            transient = (code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                         and reason in (pb.REASON_UNSPECIFIED, pb.LEDGER_UNAVAILABLE))
            now = time.monotonic()
            if transient and code == grpc.StatusCode.UNAVAILABLE \
                    and reason == pb.REASON_UNSPECIFIED and _listening(self.target):
                listening_since = listening_since or now
                transient = now - listening_since < LISTENING_GRACE_S
            if not transient:
                self._outage.end()  # it answered, if only to refuse
            left = started + budget - now
            if not transient or left <= 0 or self._closed.is_set():
                raise self._error(method, failure, reason, next_round)
            self._outage.begin(f"{method}: {code.name}", budget)
            pause = min(backoff, left) * random.uniform(0.5, 1.0)
            backoff = min(backoff * 2, BACKOFF_MAX_S)
            if self._closed.wait(pause):
                raise self._error(method, failure, reason, next_round)

    def _error(self, method: str, error: grpc.RpcError, reason: int,
               next_round: int | None) -> SwarmNetworkError:
        code = error.code()
        if code == grpc.StatusCode.UNAVAILABLE and reason == pb.REASON_UNSPECIFIED:
            why = explain_connection_failure(self.target, self._tls, "sn", error)
        else:
            why = f"{code.name}: {error.details()}"
        return SwarmNetworkError(f"SN {self.target} {method}: {why}", code, reason, next_round)

    def wait_ready(self, timeout_s: float = 30.0) -> pb.SwarmStatus:
        """Retries GetStatus until the SN answers (it may still be starting)."""
        return self._call("GetStatus", pb.StatusRequest(), retry_s=timeout_s)

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

    def view(self, rounds: int = 0, events: int = 0):
        """The SN's read model now (swarm.swarm_view.Snapshot): what `swarm status` shows;
        `rounds` / `events`: only that many of the newest (0: all the SN keeps)."""
        from swarm.swarm_view import Snapshot

        reply = self._call("GetStatus", pb.StatusRequest(with_view=True, view_rounds=rounds,
                                                         view_events=events))
        return Snapshot.from_dict(json.loads(reply.view_json))

    def report_outcome(self, report: pb.OutcomeReport, timeout_s: float = 5.0) -> None:
        """Tells the SN how a round ended here; one try (callers treat it as best effort)."""
        self._call("ReportOutcome", report, timeout_s=timeout_s, retry_s=0.0)

    def revoke(self, fingerprint: str, reason: str) -> pb.RevokeReply:
        return self._call("Revoke", pb.RevokeRequest(fingerprint=fingerprint, reason=reason))

    def join_network(self, account_address: str, endpoint: str) -> pb.JoinReply:
        return self._call("JoinNetwork", pb.JoinRequest(account_address=account_address,
                                                        endpoint=endpoint))
