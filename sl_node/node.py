"""An SL node: its SN connection, its peer and local servers, and the sync-round loop."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from swarm.identity import Authorizer, TlsMaterial
from swarm.merging import get_merge
from swarm.network.servers import ListenError, listen_secure, new_server
from swarm.network.sn_client import Reason, SNClient, SwarmNetworkError
from swarm.protos import local_api_pb2 as lpb
from swarm.protos import sl_api_pb2 as pb
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.tensors import (
    Assembler,
    Layout,
    WeightsError,
    digest_from_hashes,
    verify_blocks,
    weights_digest,
)

from sl_node.exchange import (ByteCounter, Exchange, Gate, Inboxes, Peer, ReceiptAgreement,
                              RoundFailed, RoundPlan, hook_from_env)
from sl_node.exchange.gate import Revocations
from sl_node.exchange.transport import return_chunks_to_the_system
from sl_node.peer_service import SwarmLearningPeerServicer, add_to_server

log = logging.getLogger("swarm.sl")

# The digest an update-less (weight 0) participant checks in with.
NO_UPDATE_DIGEST = hashlib.sha256(b"swarm: no update").digest()
HEARTBEAT_S = 2.0
WAIT_SLICE_S = 5.0
MAX_MESSAGE_BYTES = 8 << 20


class StartupError(RuntimeError):
    """The node cannot start; the message says what to fix."""


class SessionError(RuntimeError):
    """The sidecar asked for something this swarm cannot do; the message says what."""


@dataclass(frozen=True)
class SLConfig:
    host_ip: str
    bind_ip: str
    sn_target: str
    fs_port: int
    data_dir: Path
    socket_path: Path
    peer_timeout_s: float = 5.0
    max_model_bytes: int = 2 << 30

    @property
    def endpoint(self) -> str:
        return f"{self.host_ip}:{self.fs_port}"


@dataclass
class MergedModel:
    round: int
    layout: Layout
    flat: np.ndarray
    hashes: list[bytes]
    digest: bytes


class SwarmLearningNode:
    """Takes part in the swarm for one site: rounds, merges, and the end of training.

    The ML sidecar drives it through the local channel: every Sync is one round
    (check in through the SN, wait for the seal, the sharded exchange with the
    sealed peers, commit the merged digest) and returns the merged weights. When
    the sidecar finishes, the node keeps taking part in rounds until min_peers
    nodes have finished, then hands back the final model.
    """

    def __init__(self, config: SLConfig, tls: TlsMaterial):
        self.config = config
        self.tls = tls
        self.node_id = tls.identity.node_id
        self.sn = SNClient(config.sn_target, tls, timeout_s=30.0)
        self.counter = ByteCounter()
        return_chunks_to_the_system()
        self.inboxes = Inboxes()  # buffers for the current round only
        self.revocations = Revocations()
        self._channels: dict[str, grpc.Channel] = {}
        self._channel_lock = threading.Lock()
        self._servers: list[grpc.Server] = []
        self._stop = threading.Event()
        self._round_lock = threading.Lock()  # one round at a time
        self.layout: Layout | None = None
        self.merge = None
        self.min_peers = 0
        self.latest: MergedModel | None = None
        self.last_round = 0
        self.swarm_done = False
        # Validity decided from receipts the SN freezes once for everyone (one SN; with
        # several the SN says so and the exchange falls back to the owners' vote).
        self.exchange = Exchange(self._channel, self.inboxes, self.counter,
                                 config.peer_timeout_s, agreement=ReceiptAgreement(self.sn),
                                 hook=hook_from_env())

    # --- start / stop -----------------------------------------------------------------

    def start(self) -> None:
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        authorizer = Authorizer(is_revoked=self.revocations.__contains__, logger=log)
        peer = self._server()
        gate = Gate(authorizer, self.inboxes, self.counter, self.config.max_model_bytes)
        add_to_server(SwarmLearningPeerServicer(gate, self._held_model), peer)
        try:
            listen_secure(peer, f"{self.config.bind_ip}:{self.config.fs_port}",
                          self.tls.server_credentials(), "--sl-fs-port")
        except ListenError as error:
            raise StartupError(str(error)) from None
        try:
            self.sn.wait_ready(timeout_s=60.0)
            member = self.sn.register(self.config.endpoint)
        except SwarmNetworkError as error:
            raise StartupError(f"cannot register with the SN: {error}") from None
        log.info("registered as %s at %s through SN %s", member.node_id, self.config.endpoint,
                 self.config.sn_target)
        peer.start()
        threading.Thread(target=self._heartbeats, name="sl-heartbeat", daemon=True).start()

    def serve_local(self, servicer) -> None:
        """Starts the sidecar-facing server on the unix socket."""
        self.config.socket_path.parent.mkdir(parents=True, exist_ok=True)
        server = self._server()
        servicer.add_to_server(server)
        server.add_insecure_port(f"unix://{self.config.socket_path}")
        server.start()
        self.config.socket_path.chmod(0o600)  # only this user's sidecar may drive the node

    def stop(self) -> None:
        self._stop.set()
        for server in self._servers:
            server.stop(grace=2).wait(5)
        self.exchange.close()
        for channel in self._channels.values():
            channel.close()
        self.sn.close()

    def _server(self) -> grpc.Server:
        server = new_server("sl", MAX_MESSAGE_BYTES)
        self._servers.append(server)
        return server

    def _heartbeats(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.sn.heartbeat()
                self.revocations.refresh(self.sn, time.monotonic())
            except SwarmNetworkError as error:
                if self._stop.is_set():
                    return
                if error.reason not in (Reason.INACTIVE, Reason.NOT_REGISTERED):
                    log.warning("heartbeat to SN failed: %s", error)
                    continue
                # Cut off long enough to be marked inactive, or an SN that lost us:
                # register again so that the next round counts this node.
                log.warning("the SN no longer counts this node (%s): registering again",
                            Reason.Name(error.reason))
                try:
                    self.sn.register(self.config.endpoint)
                    log.info("registered again as %s at %s", self.node_id,
                             self.config.endpoint)
                except SwarmNetworkError as again:
                    log.warning("registering again failed: %s", again)

    def _channel(self, endpoint: str) -> grpc.Channel:
        with self._channel_lock:
            channel = self._channels.get(endpoint)
            if channel is None:
                channel = self.tls.secure_channel(endpoint, peer_role="sl", options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)])
                self._channels[endpoint] = channel
            return channel

    def _held_model(self, round_number: int):
        latest = self.latest
        if latest is None or (round_number and round_number != latest.round):
            return None
        return latest.round, latest.layout, latest.flat, latest.hashes, latest.digest

    # --- the sidecar's calls ------------------------------------------------------------

    def hello(self, config_json: str, layout_json: str, framework: str) -> lpb.HelloReply:
        try:
            params = json.loads(config_json or "{}")
            layout = Layout.from_json(layout_json)
        except (ValueError, WeightsError) as error:
            raise SessionError(f"the sidecar's Hello is malformed: {error}") from None
        if self.layout is not None and self.layout.fingerprint != layout.fingerprint:
            raise SessionError("the sidecar's model layout changed since its first Hello")
        if layout.nbytes > self.config.max_model_bytes:
            raise SessionError(f"the model is {layout.nbytes} bytes, over the limit of "
                               f"{self.config.max_model_bytes}")
        method = params.get("merge_method", "mean")
        try:
            self.merge = get_merge(method, **params.get("merge_params", {}))
        except ValueError as error:
            raise SessionError(str(error)) from None
        # The first node's model layout is the swarm's: recorded on the ledger with the
        # session, so a node whose model differs is refused here, before any round.
        params["layout_fingerprint"] = layout.fingerprint.hex()
        session = self.sn.configure(int(params.get("min_peers", 1)), json.dumps(params))
        try:
            recorded = json.loads(session.config_json or "{}")
        except ValueError:
            recorded = {}
        swarm_layout = recorded.get("layout_fingerprint")
        if swarm_layout and swarm_layout != params["layout_fingerprint"]:
            raise SessionError("this sidecar's model differs from the swarm's (the shapes or "
                               "dtypes of its weights do not match the model the swarm "
                               "trains); every node must build the same model")
        self.layout = layout
        self.min_peers = session.min_peers
        if session.min_peers != params.get("min_peers", session.min_peers):
            log.warning("the swarm runs with min_peers=%d (recorded on the ledger), not the "
                        "callback's %s", session.min_peers, params.get("min_peers"))
        status = self.sn.status()
        log.info("sidecar (%s) connected: %d tensors, %.1f MB, merge %s, min_peers %d",
                 framework, len(layout.tensors), layout.nbytes / 1e6, method, self.min_peers)
        return lpb.HelloReply(node_id=self.node_id, min_peers=self.min_peers,
                              config_json=session.config_json,
                              merged_model_available=status.has_merged_round)

    def sync(self, flat: np.ndarray, weight: int, begin: bool) -> tuple[lpb.SyncResult, MergedModel | None]:
        """One round with this update; returns the merged model (or the final one)."""
        self._require_hello()
        if self._done():
            return self._final_result()
        if begin:
            status = self.sn.status()
            if status.has_merged_round:  # a late joiner or a restart: catch up first
                model = self._fetch_latest(status)
                return (lpb.SyncResult(round=model.round, merged_digest=model.digest,
                                       total_bytes=model.layout.nbytes,
                                       message="loaded the swarm's latest merged model"), model)
        return self._round(flat, weight)

    def finish(self, flat: np.ndarray | None, weight: int, mode: str) -> tuple[lpb.SyncResult, MergedModel | None]:
        """This node's training is over: take part until min_peers nodes have finished."""
        self._require_hello()
        if mode not in ("snapshot", "active", "inactive"):
            raise SessionError(f"checkin_model_on_train_end {mode!r} is not one of "
                               f"snapshot, active, inactive")
        self.sn.mark_finished()
        log.info("training finished here (%s); waiting until %d nodes have finished",
                 mode, self.min_peers)
        contribution, contribution_weight = (None, 0) if mode == "inactive" else (flat, weight)
        while not self._done():
            status = self.sn.status()
            next_round = max(self.last_round, status.last_sealed_round) + 1
            info = self.sn.wait_round(next_round, timeout_s=1.0, until_check_in=True)
            others = [n for n in info.checked_in if n != self.node_id]
            if info.sealed or others:  # peers are syncing: take part
                self._round(contribution, contribution_weight)
                if mode == "active" and self.latest is not None:
                    contribution = self.latest.flat
        return self._final_result()

    # --- rounds -------------------------------------------------------------------------

    def _require_hello(self) -> None:
        if self.layout is None:
            raise SessionError("the sidecar must call Hello before Sync or Finish")

    def _done(self) -> bool:
        if not self.swarm_done:
            status = self.sn.status()
            self.swarm_done = status.finished >= max(1, self.min_peers)
            if self.swarm_done:
                log.info("%d node(s) finished training: the swarm is done", status.finished)
        return self.swarm_done

    def _final_result(self) -> tuple[lpb.SyncResult, MergedModel | None]:
        # A round sealed just before the end may still be merging: every node must load
        # the same final model, so wait (bounded) until the last sealed round is merged.
        deadline = time.monotonic() + 3 * self.config.peer_timeout_s
        status = self.sn.status()
        while (status.last_sealed_round > status.latest_merged_round
               and time.monotonic() < deadline):
            time.sleep(0.2)
            status = self.sn.status()
        model = self.latest
        if status.has_merged_round and (model is None
                                        or model.round != status.latest_merged_round):
            model = self._fetch_latest(status)
        if model is None:
            return lpb.SyncResult(swarm_done=True, message="the swarm merged no model"), None
        return (lpb.SyncResult(round=model.round, merged_digest=model.digest, swarm_done=True,
                               total_bytes=model.layout.nbytes,
                               message="the final swarm model"), model)

    def _round(self, flat: np.ndarray | None, weight: int) -> tuple[lpb.SyncResult, MergedModel | None]:
        with self._round_lock:
            if flat is not None:
                digest, hashes = weights_digest(self.layout, flat)
            else:
                digest, hashes, weight = NO_UPDATE_DIGEST, [], 0
            status = self.sn.status()
            round_number = max(self.last_round, status.last_sealed_round) + 1
            while True:
                if self._done():
                    return self._final_result()
                control_started = time.perf_counter()
                self.inboxes.expect(round_number)  # peers may push for it from now on
                try:
                    self.sn.check_in(round_number, weight, digest)
                except SwarmNetworkError as error:
                    if error.reason == Reason.SWARM_DONE:
                        self.swarm_done = True
                        return self._final_result()
                    if error.reason == Reason.ROUND_OVER and error.next_round:
                        round_number = error.next_round
                        continue
                    raise
                info = self._wait_sealed(round_number, weight, digest)
                if info is None:
                    return self._final_result()
                plan = self._plan(info)
                if plan is None:  # sealed without us (we were late): the next one
                    log.info("round %d was sealed without this node; joining round %d",
                             round_number, round_number + 1)
                    round_number += 1
                    continue
                started = time.perf_counter()
                control_s = started - control_started
                before = (self.counter.sent, self.counter.received)
                try:
                    merged, merged_digest, merged_hashes = self.exchange.run(
                        plan, flat, hashes, self.merge)
                except RoundFailed as error:
                    log.warning("%s; trying again in round %d without it", error,
                                round_number + 1)
                    round_number += 1
                    continue
                exchange_s = time.perf_counter() - started
                sent, received = self.counter.sent - before[0], self.counter.received - before[1]
                reply = self.sn.commit_merged(round_number, merged_digest)
                if not reply.agreed:
                    log.warning("round %d: our merged digest %s differs from the ledger's %s",
                                round_number, merged_digest.hex()[:16],
                                reply.ledger_digest.hex()[:16])
                self.latest = MergedModel(round_number, self.layout, merged, merged_hashes,
                                          merged_digest)
                self.last_round = round_number
                size = self.layout.nbytes or 1
                log.info("round %d merged with %d peers in %.3f s (control %.3f s, exchange "
                         "%.3f s; sent %.2f, received %.2f model sizes)", round_number,
                         plan.size, control_s + exchange_s, control_s, exchange_s,
                         sent / size, received / size)
                return (lpb.SyncResult(round=round_number, participants=plan.size,
                                       merged_digest=merged_digest, total_bytes=merged.nbytes),
                        self.latest)

    def _wait_sealed(self, round_number: int, weight: int, digest: bytes):
        """Waits for the seal, saying who is missing; None when the swarm ended meanwhile."""
        while True:
            info = self.sn.wait_round(round_number, WAIT_SLICE_S)
            if info.sealed:
                return info
            if self._done():
                return None
            if self.node_id not in info.checked_in:
                # A restarted SN lost the check-in it held in memory: send it again.
                try:
                    self.sn.check_in(round_number, weight, digest)
                except SwarmNetworkError as error:
                    if error.reason != Reason.ROUND_OVER:  # sealed meanwhile: see above
                        raise
            log.info("round %d: waiting for peers (%d of min %d checked in; missing: %s)",
                     round_number, len(info.checked_in), info.min_peers,
                     ", ".join(info.missing) or "none")

    def _plan(self, info) -> RoundPlan | None:
        peers = tuple(Peer(p.node_id, p.endpoint, p.fingerprint, p.weight, bytes(p.digest))
                      for p in info.participants)
        me = next((i for i, p in enumerate(peers) if p.node_id == self.node_id), None)
        if me is None:
            return None
        return RoundPlan(info.round, peers, me, self.layout)

    def _fetch_latest(self, status) -> MergedModel:
        """Loads the latest merged model from a peer that holds it, checked against the ledger."""
        info = self.sn.wait_round(status.latest_merged_round, 0.1)
        expected = bytes(status.latest_merged_digest)
        errors = []
        for participant in info.participants:
            if participant.node_id == self.node_id:
                continue
            try:
                model = self._fetch_from(participant.endpoint, status.latest_merged_round)
            except grpc.RpcError as error:
                errors.append(f"{participant.node_id}: {error.details()}")
                continue
            except WeightsError as error:
                errors.append(f"{participant.node_id}: {error}")
                continue
            if model.digest != expected:
                errors.append(f"{participant.node_id}: digest differs from the ledger's")
                continue
            log.info("loaded the merged model of round %d from %s", model.round,
                     participant.node_id)
            self.latest = model
            self.last_round = max(self.last_round, model.round)
            return model
        raise SessionError(f"could not load the merged model of round "
                           f"{status.latest_merged_round}: " + "; ".join(errors or ["no peer holds it"]))

    def _fetch_from(self, endpoint: str, round_number: int) -> MergedModel:
        stub = pb_grpc.SwarmLearningPeerStub(self._channel(endpoint))
        stream = stub.FetchModel(pb.FetchRequest(round=round_number), timeout=300)
        header = next(stream).header
        layout = Layout.from_json(header.layout_json)
        if layout.fingerprint != self.layout.fingerprint:
            raise WeightsError("the swarm's model has another layout than this sidecar's")
        assembler = Assembler(header.total_bytes, limit_bytes=self.config.max_model_bytes,
                              who=endpoint)
        for chunk in stream:
            assembler.add(chunk.data)
            self.counter.add(received=len(chunk.data))
        data = assembler.finish()
        hashes = list(header.block_hashes)
        verify_blocks(data, 0, hashes, endpoint)
        digest = digest_from_hashes(layout.fingerprint, hashes)
        flat = np.frombuffer(data, dtype=layout.wire)
        return MergedModel(header.round, layout, flat, hashes, digest)
