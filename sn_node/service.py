"""The SN API servicers: SwarmNetwork for nodes, LedgerPeer for other SN nodes."""

from __future__ import annotations

import ipaddress
import json
import logging
import math
import re
import threading
import time
from contextlib import contextmanager
from typing import Callable

import grpc

from swarm.identity import Authorizer, NodeIdentity
from swarm.ledger import STATUS_ACTIVE, LedgerError, Member, MergeStatus, node_key
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc

from sn_node.directory import MemberDirectory
from sn_node.ledger_loop import LedgerLoop, LedgerReceipts
from sn_node.read_model import NodeOutcome
from sn_node.receipts import ReceiptBook
from sn_node.rounds import CheckIn, RoundBook, RoundError, SealedRound

log = logging.getLogger("swarm.sn.api")

MAX_WAIT_S = 300.0
MAX_RECEIPTS_WAIT_S = 60.0
LEDGER_WRITE_TIMEOUT_S = 60.0
# How long CommitMerged waits for a majority of the round's participants to commit:
# below the SL client's 10 s call deadline, so a lasting lack of one reads MERGE_PENDING.
COMMIT_WAIT_S = 8.0
MAX_PARKED_COMMITS = 16
_VERDICTS = {MergeStatus.AGREED: pb.MERGE_AGREED, MergeStatus.FAILED: pb.MERGE_FAILED,
             MergeStatus.PENDING: pb.MERGE_PENDING}
# WaitRound calls one caller may have parked at once (an SL node needs one or two), and
# all callers together: the rest of the SN's 64 handler threads stay free for check-ins.
MAX_PARKED_PER_CALLER = 4
MAX_PARKED = 48


#: Told the typed reason of every refusal (e.g. metrics); one SN per process.
REFUSAL_OBSERVERS: list[Callable[[str], None]] = []


def refuse(context, code: grpc.StatusCode, reason: str, message: str,
           next_round: int | None = None):
    """Aborts the call with a typed reason (trailing metadata) beside the message."""
    for observe in REFUSAL_OBSERVERS:
        observe(reason)
    metadata = [("swarm-reason", pb.Reason.Name(pb.Reason.Value(reason)))]
    if next_round is not None:
        metadata.append(("swarm-next-round", str(next_round)))
    context.set_trailing_metadata(tuple(metadata))
    context.abort(code, message)


_HOSTNAME = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*\.?")


def endpoint_problem(endpoint: str) -> str | None:
    """Why `endpoint` is no address peers can dial (HOST:PORT), or None when it is one."""
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or len(endpoint) > 255:
        return "is not HOST:PORT"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"has port {port!r}, not 1..65535"
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        if bracketed or not _HOSTNAME.fullmatch(host) or host.replace(".", "").isdigit():
            return f"has host {host!r}, neither an IP address nor a DNS name"
        return None
    if address.version == 6 and not bracketed:
        return f"has IPv6 host {host!r} without [brackets]"
    if address.is_unspecified or address.is_multicast or (
            address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255")):
        return f"has host {host!r}, which peers cannot dial"
    return None


class SwarmNetworkServicer(pb_grpc.SwarmNetworkServicer):
    """Serves the SN API: every call is authorised by the caller's certificate first.

    The caller's node id comes from its certificate, so a node registers, checks in
    and commits only for itself. Reads come from the SN's caches; writes go to the
    ledger thread; check-ins stay in memory until their round can be sealed.
    `GetStatus` answers from the read model (`loop.view`) and never calls the ledger.
    """

    def __init__(self, node_identity: NodeIdentity, directory: MemberDirectory,
                 rounds: RoundBook, loop: LedgerLoop, authorizer: Authorizer,
                 admit_sn: Callable | None, on_outcome: Callable | None = None):
        self._me = node_identity
        self._directory = directory
        self._rounds = rounds
        self._loop = loop
        self._view = loop.view
        self._auth = authorizer
        self._on_outcome = on_outcome  # (node id, OutcomeReport): e.g. metrics
        self._admit_sn = admit_sn  # sentinel only
        self._parked_lock = threading.Lock()
        self._parked: dict[str, int] = {}  # node id -> WaitRound calls parked now
        self._parked_commits = 0  # CommitMerged calls waiting for the majority now
        # With several SN nodes the bitmaps go through the ledger, one order for all.
        self._receipts = ReceiptBook(rounds, chain=LedgerReceipts(loop, LEDGER_WRITE_TIMEOUT_S),
                                     several_sn=lambda: directory.sn_count() > 1)
        loop.receipts = self._receipts

    # --- helpers ----------------------------------------------------------------------

    def _write(self, context, fn, *args):
        """Runs a ledger write on the ledger thread; a revert becomes FAILED_PRECONDITION."""
        try:
            return self._loop.submit(fn, *args).result(timeout=LEDGER_WRITE_TIMEOUT_S)
        except LedgerError as error:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED",
                   f"ledger refused: {error}")
        except TimeoutError:
            refuse(context, grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE",
                   "the ledger did not answer in time")

    @contextmanager
    def _parking(self, context, who: NodeIdentity):
        """Bounds the WaitRound calls parked per caller and in all, refusing beyond (BUSY)."""
        with self._parked_lock:
            mine = self._parked.get(who.node_id, 0)
            busy = (mine >= MAX_PARKED_PER_CALLER and "this caller already has "
                    f"{mine} WaitRound calls waiting")
            if not busy and sum(self._parked.values()) >= MAX_PARKED:
                busy = f"{MAX_PARKED} WaitRound calls are waiting already"
            if not busy:
                self._parked[who.node_id] = mine + 1
        if busy:
            refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, "BUSY",
                   f"{who.node_id}: {busy}; try again later")
        try:
            yield
        finally:
            with self._parked_lock:
                left = self._parked[who.node_id] - 1
                if left:
                    self._parked[who.node_id] = left
                else:
                    del self._parked[who.node_id]

    def _sealed_round(self, round_number: int) -> SealedRound | None:
        """A sealed round from the cache, or read back from the ledger when it is older."""
        sealed = self._rounds.sealed(round_number)
        last = self._rounds.last_sealed
        if sealed is not None or last is None or not 1 <= round_number <= last:
            return sealed
        info = self._loop.read(lambda ledger: ledger.round_info(round_number))
        if not info.sealed:
            return None  # skipped: a later round was sealed first
        sealed = SealedRound(round_number, tuple(info.participants), tuple(info.weights),
                             tuple(info.digests), info.merged_digest or b"")
        self._rounds.remember(sealed)
        return sealed

    def _reactivate(self, context, who: NodeIdentity, member: Member) -> Member:
        """A node this SN marked inactive (now or before a restart) is heard from again."""
        back = self._directory.heartbeat(node_key(who.node_id))
        if (back or member.status_name == "inactive") and self._directory.controlled_here(member):
            log.info("%s is back: marking it active", who.node_id)
            self._write(context, lambda ledger: ledger.set_status(who.node_id, STATUS_ACTIVE))
            self._loop.refresh_members_now()
            member = self._directory.by_node_id(who.node_id) or member
        return member

    def _member_of(self, context, who: NodeIdentity) -> Member:
        member = self._directory.by_node_id(who.node_id)
        if member is None:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "NOT_REGISTERED",
                   f"{who.node_id} is not registered: call Register first")
        if member.fingerprint.hex() != who.fingerprint.lower():
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "WRONG_CERTIFICATE",
                   f"{who.node_id} is registered with certificate "
                   f"{member.fingerprint[:16]}…, not {who.fingerprint[:16]}…")
        return member

    def _participant_member(self, context, who: NodeIdentity) -> Member:
        member = self._reactivate(context, who, self._member_of(context, who))
        if member.status_name != "active":
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "INACTIVE",
                   f"{who.node_id} is {member.status_name} on the ledger: register again")
        if not self._directory.controlled_here(member):
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "OTHER_SN",
                   f"{who.node_id} is registered through another SN node; register "
                   f"with this one (or talk to that one)")
        return member

    def _to_pb(self, member: Member) -> pb.Member:
        return pb.Member(node_id=member.node_id, role=member.role_name,
                         fingerprint=member.fingerprint.hex(), endpoint=member.endpoint,
                         status=member.status_name, last_seen=member.last_seen,
                         alive=self._directory.alive(node_key(member.node_id)))

    # --- SL / SWCI --------------------------------------------------------------------

    def Register(self, request, context):
        who = self._auth.authorize(context, ("sl", "swci"), "Register")
        problem = endpoint_problem(request.endpoint)
        if problem:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"endpoint {request.endpoint!r} {problem}")
        # Alive from now: the liveness sweep must not catch it before its first heartbeat.
        self._directory.heartbeat(node_key(who.node_id))
        member = self._directory.by_node_id(who.node_id)
        unchanged = (member is not None and member.status_name == "active"
                     and member.endpoint == request.endpoint
                     and member.fingerprint.hex() == who.fingerprint.lower()
                     and self._directory.controlled_here(member))
        if not unchanged:
            self._write(context, lambda ledger: ledger.register_node(
                who.node_id, who.role, who.fingerprint, request.endpoint))
            self._loop.refresh_members_now()
            log.info("registered %s (%s) at %s", who.node_id, who.role, request.endpoint)
        self._directory.heartbeat(node_key(who.node_id))
        return self._to_pb(self._directory.by_node_id(who.node_id))

    def Heartbeat(self, request, context):
        who = self._auth.authorize(context, ("sl", "swci"), "Heartbeat")
        self._reactivate(context, who, self._member_of(context, who))
        last = self._rounds.last_sealed
        return pb.HeartbeatReply(last_sealed_round=last or 0, server_time=time.time())

    def ListPeers(self, request, context):
        self._auth.authorize(context, ("sl", "swci", "sn"), "ListPeers")
        if request.role and request.role not in ("sn", "sl", "swci"):
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"role {request.role!r} is not one of sn, sl, swci")
        members = [m for m in self._directory.all()
                   if not request.role or m.role_name == request.role]
        return pb.PeerList(members=[self._to_pb(m) for m in members])

    def Configure(self, request, context):
        who = self._auth.authorize(context, ("sl", "swci"), "Configure")
        if not 1 <= request.min_peers <= 256:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"min_peers {request.min_peers} is outside 1..256")
        if len(request.config_json.encode()) > 4096:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   "config_json is over 4096 bytes")
        if self._loop.min_peers is None:
            try:
                self._loop.submit(lambda ledger: ledger.configure(
                    request.min_peers, request.config_json)).result(LEDGER_WRITE_TIMEOUT_S)
                log.info("%s configured the session: min_peers=%d", who.node_id,
                         request.min_peers)
            except LedgerError as error:  # another node configured it first: fine
                log.info("configure by %s: %s", who.node_id, error)
            self._loop.refresh_config_now()
        return pb.SessionConfig(min_peers=self._loop.min_peers or 0,
                                config_json=self._loop.config_json)

    def CheckIn(self, request, context):
        who = self._auth.authorize(context, ("sl",), "CheckIn")
        self._participant_member(context, who)
        if request.round < 1:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   "rounds are numbered from 1")
        if request.weight > 100:  # 0: a participant without an update of its own
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"weight {request.weight} is outside 0..100")
        if len(request.digest) != 32 or not any(request.digest):
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"digest must be a non-zero 32-byte SHA-256, got {len(request.digest)} bytes")
        if self._loop.min_peers is None:
            self._loop.refresh_config_now()  # another SN may have configured it just now
        if self._loop.min_peers is None:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "NOT_CONFIGURED",
                   "the session is not configured yet: call Configure with min_peers")
        if self._loop.swarm_done():
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "SWARM_DONE",
                   f"the swarm is done: {self._loop.finished} nodes finished training "
                   f"(min_peers {self._loop.min_peers}); load the final model")
        key = node_key(who.node_id)
        self._directory.heartbeat(key)
        try:
            count = self._rounds.check_in(request.round, key,
                                          CheckIn(request.weight, bytes(request.digest)))
        except RoundError as error:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, error.reason,
                   f"{who.node_id}: {error}", error.next_round)
        self._view.note_check_in(request.round, key)
        self._loop.poke()
        return pb.CheckInReply(round=request.round, checked_in=count)

    def WaitRound(self, request, context):
        who = self._auth.authorize(context, ("sl", "swci"), "WaitRound")
        timeout_s = min(request.timeout_ms / 1000.0, MAX_WAIT_S)
        try:
            sealed = self._sealed_round(request.round)
            if sealed is None:
                with self._parking(context, who):
                    sealed = self._rounds.wait_sealed(request.round, timeout_s,
                                                      until_check_in=request.until_check_in)
        except RoundError as error:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, error.reason,
                   f"{who.node_id}: {error}", error.next_round)
        info = pb.RoundInfo(round=request.round, min_peers=self._loop.min_peers or 0)
        if sealed is None:
            checked = self._rounds.checked_in(request.round)
            names = {k: self._directory.get(k) for k in checked | self._directory.active_sl_keys()}
            info.checked_in.extend(sorted(m.node_id for k, m in names.items()
                                          if k in checked and m))
            info.missing.extend(sorted(m.node_id for k, m in names.items()
                                       if k not in checked and m))
            return info
        info.sealed = True
        info.merged_digest = sealed.merged_digest
        for key, weight, digest in zip(sealed.keys, sealed.weights, sealed.digests):
            member = self._directory.get(key)
            info.participants.append(pb.Participant(
                node_id=member.node_id if member else "", weight=weight, digest=digest,
                endpoint=member.endpoint if member else "",
                fingerprint=member.fingerprint.hex() if member else ""))
        return info

    def CommitMerged(self, request, context):
        who = self._auth.authorize(context, ("sl",), "CommitMerged")
        self._member_of(context, who)
        if len(request.digest) != 32:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"digest must be 32 bytes, got {len(request.digest)}")
        sealed = self._sealed_round(request.round)
        if sealed is None:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "NOT_SEALED",
                   f"round {request.round} is not sealed")
        if node_key(who.node_id) not in sealed.keys:
            refuse(context, grpc.StatusCode.PERMISSION_DENIED, "NOT_PARTICIPANT",
                   f"{who.node_id} is not a participant of round {request.round}")
        digest = bytes(request.digest)
        merges = self._loop.merges
        decided = merges.decided(request.round)
        if decided is None or (decided.status == MergeStatus.AGREED and decided.digest != digest):
            # A vote (batched with the others that arrive meanwhile), or, once agreed, a
            # disagreement the ledger keeps as evidence (a MergeMismatch event).
            try:
                merges.vote(request.round, node_key(who.node_id), digest).result(
                    timeout=LEDGER_WRITE_TIMEOUT_S)
            except LedgerError as error:
                refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "LEDGER_REFUSED",
                       f"ledger refused: {error}")
            except TimeoutError:
                refuse(context, grpc.StatusCode.UNAVAILABLE, "LEDGER_UNAVAILABLE",
                       "the ledger did not answer in time")
        # Until a strict majority of the participants committed, the round has no merged
        # digest: wait (bounded, below the caller's deadline) for the other votes, with a
        # handler thread of a bounded few; the rest hear PENDING at once and ask again.
        with self._parked_lock:
            park = self._parked_commits < MAX_PARKED_COMMITS
            self._parked_commits += park
        try:
            decision = merges.wait(request.round, COMMIT_WAIT_S if park else 0.0)
        finally:
            with self._parked_lock:
                self._parked_commits -= park
        if decision.status == MergeStatus.PENDING:
            self._loop.refresh_round(request.round)  # events missed, e.g. across a restart
            decision = merges.decided(request.round) or decision
        verdict = _VERDICTS[decision.status]
        if decision.status == MergeStatus.AGREED and decision.digest != digest:
            verdict = pb.MERGE_DISAGREED
            log.warning("round %d: %s merged to %s but a majority committed %s", request.round,
                        who.node_id, digest.hex()[:16], decision.digest.hex()[:16])
        return pb.CommitMergedReply(agreed=verdict == pb.MERGE_AGREED,
                                    ledger_digest=decision.digest, verdict=verdict)

    def _receipt_caller(self, context, action: str) -> bytes:
        who = self._auth.authorize(context, ("sl",), action)
        self._member_of(context, who)
        return node_key(who.node_id)

    def SubmitReceipts(self, request, context):
        key = self._receipt_caller(context, "SubmitReceipts")
        try:
            self._receipts.submit(request.round, request.phase, key, bytes(request.bits),
                                  request.remaining_ms / 1000.0)
        except RoundError as error:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, error.reason, str(error))
        return pb.ReceiptsAck()

    def WaitReceipts(self, request, context):
        key = self._receipt_caller(context, "WaitReceipts")
        try:
            frozen = self._receipts.wait(request.round, request.phase, key,
                                         min(request.timeout_ms / 1000.0, MAX_RECEIPTS_WAIT_S))
        except RoundError as error:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, error.reason, str(error))
        if frozen is None:
            return pb.ReceiptSet(frozen=False)
        return pb.ReceiptSet(frozen=True, receipts=[pb.Receipt(index=i, bits=bits)
                                                    for i, bits in sorted(frozen.items())])

    def MarkFinished(self, request, context):
        who = self._auth.authorize(context, ("sl",), "MarkFinished")
        self._member_of(context, who)

        def mark(ledger) -> bool:
            if ledger.is_finished(who.node_id):  # a repeated call (a retry): nothing to do
                return False
            ledger.mark_finished(who.node_id)
            return True

        if self._write(context, mark):
            log.info("%s finished its training", who.node_id)
        self._loop.refresh_config_now()
        return self.GetStatus(request, context)

    def GetStatus(self, request, context):
        self._auth.authorize(context, ("sl", "swci", "sn"), "GetStatus")
        facts = self._view.node_facts()
        facts.pop("sn_node_id", None)
        status = pb.SwarmStatus(sn_node_id=self._me.node_id, min_peers=self._loop.min_peers or 0,
                                config_json=self._loop.config_json,
                                members=len(self._directory.all()), finished=self._loop.finished,
                                **facts)
        if self._rounds.last_sealed is not None:
            status.last_sealed_round = self._rounds.last_sealed
        if self._rounds.latest_merged is not None:
            status.has_merged_round = True
            status.latest_merged_round, status.latest_merged_digest = self._rounds.latest_merged
        if getattr(request, "with_view", False):
            snapshot = self._view.snapshot(rounds=request.view_rounds or None,
                                           events=request.view_events or None)
            status.view_json = json.dumps(snapshot.to_dict())
        return status

    def ReportOutcome(self, request, context):
        who = self._auth.authorize(context, ("sl",), "ReportOutcome")
        self._member_of(context, who)
        if request.status not in ("merged", "failed"):
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"outcome status {request.status!r} is not merged or failed")
        if len(request.dropped) > 256 or len(request.reason) > 1024:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   "outcome report too large")
        outcome = NodeOutcome(
            node_id=who.node_id, status=request.status, reason=request.reason,
            round_s=round(request.control_s + request.exchange_s, 6),
            exchange_s=round(request.exchange_s, 6), bytes_sent=request.bytes_sent,
            bytes_received=request.bytes_received,
            dropped={k[:128]: v[:256] for k, v in request.dropped.items()},
            agreed={1: True, 2: False}.get(request.agreed))
        self._view.note_outcome(who.node_id, outcome, request.round)
        metrics = {k[:64]: v for k, v in request.metrics.items() if math.isfinite(v)}
        if metrics and 0 < request.metrics_round <= request.round and len(metrics) <= 32:
            self._view.note_metrics(who.node_id, request.metrics_round, metrics)
        if self._on_outcome is not None:
            self._on_outcome(who.node_id, request)
        return pb.OutcomeAck()

    def Revoke(self, request, context):
        who = self._auth.authorize(context, ("swci",), "Revoke")
        fingerprint = request.fingerprint.lower().replace(":", "")
        if len(fingerprint) != 64 or any(c not in "0123456789abcdef" for c in fingerprint):
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"fingerprint {request.fingerprint!r} is not 64 hex digits (SHA-256)")
        self._write(context, lambda ledger: ledger.revoke(fingerprint, request.reason[:256]))
        self._loop.refresh_members_now()
        revoked = next((m.node_id for m in self._directory.all()
                        if m.fingerprint.hex() == fingerprint), "")
        log.warning("%s revoked certificate %s… (%s): %s", who.node_id, fingerprint[:16],
                    revoked or "no member", request.reason)
        return pb.RevokeReply(node_id=revoked)

    # --- SN ---------------------------------------------------------------------------

    def JoinNetwork(self, request, context):
        who = self._auth.authorize(context, ("sn",), "JoinNetwork")
        if self._admit_sn is None:
            refuse(context, grpc.StatusCode.FAILED_PRECONDITION, "NOT_SENTINEL",
                   f"{self._me.node_id} is not the sentinel: join through the sentinel")
        problem = endpoint_problem(request.endpoint)
        if problem:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   f"endpoint {request.endpoint!r} {problem}")
        try:
            reply = self._admit_sn(who, request.account_address, request.endpoint)
        except (LedgerError, ValueError) as error:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot admit {who.node_id}: {error}")
        log.info("admitted SN %s at %s", who.node_id, request.endpoint)
        return reply


class LedgerPeerServicer(pb_grpc.LedgerPeerServicer):
    """Lets admitted SN nodes reach the sentinel's embedded chain (JSON-RPC over mTLS)."""

    def __init__(self, handle_json_rpc: Callable[[bytes], bytes], directory: MemberDirectory,
                 authorizer: Authorizer, on_transaction: Callable[[], None]):
        self._handle = handle_json_rpc
        self._directory = directory
        self._auth = authorizer
        self._on_transaction = on_transaction

    def Call(self, request, context):
        who = self._auth.authorize(context, ("sn",), "LedgerPeer.Call")
        member = self._directory.by_node_id(who.node_id)
        if member is None or member.status_name != "active" or (
                member.fingerprint.hex() != who.fingerprint.lower()):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{who.node_id} is not an admitted SN member: call JoinNetwork first")
        if len(request.payload) > 1 << 20:
            refuse(context, grpc.StatusCode.INVALID_ARGUMENT, "BAD_REQUEST",
                   "ledger request over 1 MiB")
        reply = self._handle(bytes(request.payload))
        if b"eth_sendRawTransaction" in request.payload:
            self._on_transaction()
        return pb.LedgerRpcReply(payload=reply)
