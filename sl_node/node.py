"""An SL node: wiring and lifecycle (SN connection, peer and local servers, heartbeats),
the sidecar's session, and the end of training. One round is `round_driver`'s job,
loading the latest merged model `catchup`'s."""

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
from swarm.network.servers import ListenError, listen_secure, new_server
from swarm.network.sn_client import Reason, SNClient, SwarmNetworkError
from swarm.protos import local_api_pb2 as lpb
from swarm.protos import sl_api_pb2_grpc as pb_grpc
from swarm.session import CHECKIN_MODES, Session, SessionFormatError
from swarm.tensors import Layout, WeightsError, weights_digest

from sl_node.catchup import CatchUpError, MergedModel, fetch_agreed, fetch_latest
from sl_node.exchange import ByteCounter, Exchange, Gate, Inboxes, ReceiptAgreement, hook_from_env
from sl_node.exchange.faults import hook_for
from sl_node.exchange.gate import Revocations
from sl_node.exchange.transport import return_chunks_to_the_system
from sl_node.outcome_report import OutcomeReporter, Outcomes
from sl_node.peer_service import SwarmLearningPeerServicer, add_to_server
from sl_node.round_driver import OUTCOMES_FILE, OutcomeLog, RoundDriver, RoundOutcome, Update

log = logging.getLogger("swarm.sl")

# The digest an update-less (weight 0) participant checks in with.
NO_UPDATE_DIGEST = hashlib.sha256(b"swarm: no update").digest()
HEARTBEAT_S = 2.0
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
    # Chaos experiments only (run-sl's hidden --experiment-faults); empty: SWARM_FAULTS.
    experiment_faults: frozenset = frozenset()

    @property
    def endpoint(self) -> str:
        return f"{self.host_ip}:{self.fs_port}"


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
        self.session: Session | None = None  # as recorded on the ledger
        self.driver: RoundDriver | None = None
        # rounds.jsonl, then the SN (best effort, off the round's thread); `add` more.
        self.reporter = OutcomeReporter(self.sn)
        self.outcomes = Outcomes(OutcomeLog(config.data_dir / OUTCOMES_FILE), self.reporter)
        self.min_peers = 0
        self.latest: MergedModel | None = None
        self.last_round = 0
        self.swarm_done = False
        self.heal_pending = False  # diverged and not healed yet: load before the next round
        # Validity decided from receipts the SN freezes once for everyone (one SN; with
        # several the SN says so and the exchange falls back to the owners' vote).
        self.hook = (hook_for(config.experiment_faults) if config.experiment_faults
                     else hook_from_env())
        self.exchange = Exchange(self._channel, self.inboxes, self.counter,
                                 config.peer_timeout_s, agreement=ReceiptAgreement(self.sn),
                                 hook=self.hook)

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
        self.reporter.close()
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
            if not isinstance(params, dict):
                raise ValueError("its config is not a JSON object")
            layout = Layout.from_json(layout_json)
        except (ValueError, WeightsError) as error:
            raise SessionError(f"the sidecar's Hello is malformed: {error}") from None
        if self.layout is not None and self.layout.fingerprint != layout.fingerprint:
            raise SessionError("the sidecar's model layout changed since its first Hello")
        if layout.nbytes > self.config.max_model_bytes:
            raise SessionError(f"the model is {layout.nbytes} bytes, over the limit of "
                               f"{self.config.max_model_bytes}")
        try:
            asked = Session.from_hello(params, layout.fingerprint.hex())
        except SessionFormatError as error:
            raise SessionError(str(error)) from None
        # The first node's Hello fixes the session on the ledger; every node then runs
        # the recorded one, whatever its own sidecar asked for.
        reply = self.sn.configure(asked.min_peers, asked.to_json())
        try:
            session = Session.from_json(reply.config_json, reply.min_peers)
            merge = session.build_merge()
        except SessionFormatError as error:
            raise SessionError(f"the swarm's recorded session cannot be used: {error}") from None
        if session.layout_fingerprint and session.layout_fingerprint != asked.layout_fingerprint:
            raise SessionError("this sidecar's model differs from the swarm's (the shapes or "
                               "dtypes of its weights do not match the model the swarm "
                               "trains); every node must build the same model")
        mismatches = [m for m in session.mismatches(asked) if m.name != "model layout"]
        refused = [m.line() for m in mismatches if m.refused]
        if refused:
            raise SessionError("; ".join(refused))
        for mismatch in mismatches:
            log.warning("%s", mismatch.line())
        self.layout, self.session, self.merge = layout, session, merge
        self.exchange.replicas = session.shard_replicas  # owners per shard, swarm-wide
        self.min_peers = session.min_peers
        self.driver = RoundDriver(self.sn, self.exchange, self.counter, self.node_id, layout,
                                  merge, self._done, self.outcomes,
                                  rejoin=lambda: self.sn.register(self.config.endpoint),
                                  expect=self.inboxes.expect, heal=self._heal,
                                  hook=self.hook, publish=self._publish)
        status = self.sn.status()
        log.info("sidecar (%s) connected: %d tensors, %.1f MB, merge %s %s, min_peers %d",
                 framework, len(layout.tensors), layout.nbytes / 1e6, session.merge_method,
                 json.dumps(session.merge_params), self.min_peers)
        return lpb.HelloReply(node_id=self.node_id, min_peers=self.min_peers,
                              config_json=reply.config_json,
                              merged_model_available=status.has_merged_round)

    def sync(self, flat: np.ndarray, weight: int, begin: bool) -> tuple[lpb.SyncResult, MergedModel | None]:
        """One round with this update; returns the merged model (or the final one)."""
        self._require_hello()
        status = self.sn.status()  # one status read per sync: done? catch up? which round?
        if self._done(status):
            return self._final_result()
        if self.heal_pending and status.has_merged_round:
            model = self._heal_late(status)
            if model is not None:
                return (lpb.SyncResult(round=model.round, merged_digest=model.digest,
                                       total_bytes=model.layout.nbytes,
                                       message="loaded the swarm's agreed model (this node "
                                               "had diverged)"), model)
        if begin and status.has_merged_round:  # a late joiner or a restart: catch up first
            model = self._fetch_latest(status)
            return (lpb.SyncResult(round=model.round, merged_digest=model.digest,
                                   total_bytes=model.layout.nbytes,
                                   message="loaded the swarm's latest merged model"), model)
        return self._round(flat, weight, status)

    def finish(self, flat: np.ndarray | None, weight: int, mode: str) -> tuple[lpb.SyncResult, MergedModel | None]:
        """This node's training is over: take part until min_peers nodes have finished."""
        self._require_hello()
        if mode not in CHECKIN_MODES:
            raise SessionError(f"checkin_model_on_train_end {mode!r} is not one of "
                               f"{', '.join(CHECKIN_MODES)}")
        status = self.sn.status()
        if mode == "snapshot" and flat is not None and not self._done(status):
            # Its final model goes into one more round before the node counts as finished:
            # otherwise the last node to finish ends the swarm and its training since its
            # last sync is lost (digits by label, Adam: 0.41 -> 0.58,
            # benchmarks/adam_label_skew.py --real). Every snapshot node does it, not only
            # the one that sees itself last, so the rounds never depend on whose finish
            # reached the ledger first (nodes finishing together share that round); an
            # earlier finisher's final model is what its snapshot would have sent anyway.
            self._round(flat, weight, status)
        self.sn.mark_finished()
        log.info("training finished here (%s); waiting until %d nodes have finished",
                 mode, self.min_peers)
        contribution, contribution_weight = (None, 0) if mode == "inactive" else (flat, weight)
        while not self._done(status := self.sn.status()):
            next_round = max(self.last_round, status.last_sealed_round) + 1
            info = self.sn.wait_round(next_round, timeout_s=1.0, until_check_in=True)
            others = [n for n in info.checked_in if n != self.node_id]
            if info.sealed or others:  # peers are syncing: take part
                self._round(contribution, contribution_weight, status)
                if mode == "active" and self.latest is not None:
                    contribution = self.latest.flat
        return self._final_result()

    # --- rounds -------------------------------------------------------------------------

    def _require_hello(self) -> None:
        if self.layout is None:
            raise SessionError("the sidecar must call Hello before Sync or Finish")

    def _done(self, status=None) -> bool:
        """Whether min_peers nodes have finished; `status` is a fresh GetStatus if the
        caller has one."""
        if not self.swarm_done:
            status = status or self.sn.status()
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

    def _round(self, flat: np.ndarray | None, weight: int,
               status) -> tuple[lpb.SyncResult, MergedModel | None]:
        with self._round_lock:
            if flat is not None:
                digest, hashes = weights_digest(self.layout, flat)
                update = Update(flat, weight, digest, hashes)
            else:
                update = Update(None, 0, NO_UPDATE_DIGEST, [])
            round_number = max(self.last_round, status.last_sealed_round) + 1
            # The caller just read `status`: the driver need not ask again whether the
            # swarm is done before its first check-in (a CheckIn says SWARM_DONE anyway).
            outcome, merged = self.driver.run(round_number, update, known_live=True)
            if merged is None:  # the swarm is done
                self.swarm_done = True
                return self._final_result()
            flat_merged, merged_digest, merged_hashes = merged
            self.heal_pending = outcome.diverged and not outcome.healed_from
            self.latest = MergedModel(outcome.round, self.layout, flat_merged, merged_hashes,
                                      merged_digest)
            self.last_round = outcome.round
            message = ""
            if outcome.start:
                message = outcome.reason  # the driver's words for the start
            elif len(outcome.contributors) == 1:
                message = (f"only {outcome.contributors[0]} sent an update: its model, "
                           "not a merge")
            return (lpb.SyncResult(round=outcome.round, participants=len(outcome.participants),
                                   merged_digest=merged_digest, total_bytes=flat_merged.nbytes,
                                   message=message), self.latest)

    def _publish(self, round_number: int, merged: tuple) -> None:
        flat, digest, hashes = merged
        self.latest = MergedModel(round_number, self.layout, flat, hashes, digest)

    def _heal(self, plan, digest: bytes):
        """The round's agreed model from a participant that holds it (the driver calls
        this when our merged digest differs from the ledger's); None if none serves it
        within two peer timeouts."""
        holders = [(p.node_id, p.endpoint) for p in plan.peers]
        try:
            model, holder = fetch_agreed(self._channel, self.node_id, self.layout, self.counter,
                                         self.config.max_model_bytes, plan.round, digest,
                                         holders, within_s=2 * self.config.peer_timeout_s)
        except CatchUpError as error:
            log.warning("%s; loading the swarm's latest model before the next round", error)
            return None
        return (model.flat, model.digest, model.hashes), holder

    def _heal_late(self, status) -> MergedModel | None:
        """A divergence not healed in its round: the swarm's latest merged model now
        (None, and still pending, if no peer serves it yet)."""
        try:
            model = self._fetch_latest(status, reason="healing a divergence: the swarm's "
                                                      "agreed model, from a peer")
        except SessionError as error:
            log.warning("%s; trying again before the next round", error)
            return None
        self.heal_pending = False
        return model

    def _fetch_latest(self, status, reason: str = "the swarm's merged model, from a peer"
                      ) -> MergedModel:
        try:
            model = fetch_latest(self.sn, self._channel, self.node_id, self.layout,
                                 self.counter, self.config.max_model_bytes, status)
        except CatchUpError as error:
            raise SessionError(str(error)) from None
        self.latest = model
        self.last_round = max(self.last_round, model.round)
        self.outcomes(RoundOutcome(round=model.round, status="loaded", reason=reason,
                                   bytes_received=model.layout.nbytes,
                                   model_bytes=model.layout.nbytes,
                                   merged_digest=model.digest.hex(), finished_at=time.time()))
        return model
