"""An SN node: its ledger connection, its ledger thread and its gRPC servers."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from web3 import Web3

from swarm.identity import Authorizer, NodeIdentity, TlsMaterial
from swarm.ledger import (
    EmbeddedChain,
    LedgerClient,
    LedgerError,
    connect_external,
    external_account,
    fund,
    load_or_create_account,
    open_or_deploy,
)
from swarm.network.servers import ListenError, listen_secure, new_server
from swarm.network.sn_client import SNClient, SwarmNetworkError
from swarm.protos import sn_api_pb2 as pb
from swarm.protos import sn_api_pb2_grpc as pb_grpc

from sn_node.directory import MemberDirectory
from sn_node.ledger_loop import LedgerLoop
from swarm.ledger.tunnel import LedgerTunnelProvider
from sn_node.read_model import ReadModel
from sn_node.rounds import RoundBook
from sn_node.service import LedgerPeerServicer, SwarmNetworkServicer

log = logging.getLogger("swarm.sn")

READY_LINE = "Starting SWARM-API-SERVER on port: {port}"
# What the sentinel gives a joining SN's fresh account on the embedded chain:
# plenty for years of transactions at the tester chain's gas prices.
JOIN_FUNDING_WEI = 100 * 10**18
MAX_MESSAGE_BYTES = 4 << 20
# Handler threads per server: room for every SL node's parked WaitRound (service.MAX_PARKED
# in all) and still SERVER_WORKERS - MAX_PARKED threads for check-ins and commits.
SERVER_WORKERS = 64


class StartupError(RuntimeError):
    """The node cannot start; the message says what to fix."""


@dataclass(frozen=True)
class NodeConfig:
    sentinel: bool
    sentinel_target: str | None
    host_ip: str
    bind_ip: str
    api_port: int
    p2p_port: int
    data_dir: Path
    ledger_url: str | None = None
    ledger_key_file: Path | None = None
    round_grace_s: float = 2.0
    liveness_timeout_s: float = 10.0

    @property
    def endpoint(self) -> str:
        return f"{self.host_ip}:{self.api_port}"


class SwarmNetworkNode:
    """Owns one SN node's parts and their start-up order.

    The sentinel opens (or creates) the ledger and deploys its contract; a joiner is
    admitted by the sentinel and reaches the same ledger, through the sentinel's
    LedgerPeer service when the ledger is embedded. From then on both run the same
    code: a ledger thread, and the SN API served over mutual TLS.
    """

    def __init__(self, config: NodeConfig, tls: TlsMaterial):
        self.config = config
        self.tls = tls
        self.identity: NodeIdentity = tls.identity
        self.chain: EmbeddedChain | None = None
        self.ledger: LedgerClient | None = None
        self.ledger_kind = ""
        self.loop: LedgerLoop | None = None
        self._servers: list[grpc.Server] = []
        self._tunnel: LedgerTunnelProvider | None = None
        self.view: ReadModel | None = None
        self._loop_started = False
        # Told of every outcome an SL node reports (node id, OutcomeReport): metrics.
        self.on_outcome = None

    # --- start / stop -----------------------------------------------------------------

    def start(self) -> None:
        started = time.perf_counter()
        self.config.data_dir.mkdir(parents=True, exist_ok=True)
        self.ledger = self._open_sentinel_ledger() if self.config.sentinel else self._join()
        directory = MemberDirectory(self.ledger.account.address, self.config.liveness_timeout_s,
                                    ledger_is_revoked=self.ledger.is_revoked)
        rounds = RoundBook(self.config.round_grace_s)
        self.view = ReadModel(directory, rounds, self.identity.node_id)
        self.view.set_node(sentinel=self.config.sentinel, ledger_kind=self.ledger_kind,
                           contract_address=self.ledger.address,
                           chain_id=self.ledger.w3.eth.chain_id)
        self.loop = LedgerLoop(self.ledger, directory, rounds, view=self.view)
        self.loop.load()
        self._recover_latest_merged(rounds)
        authorizer = Authorizer(is_revoked=directory.is_revoked, logger=log)
        servicer = SwarmNetworkServicer(
            self.identity, directory, rounds, self.loop, authorizer,
            self._admit_sn if self.config.sentinel else None,
            on_outcome=lambda node_id, report: self.on_outcome and self.on_outcome(
                node_id, report))
        api = self._server(self.config.api_port, "--sn-api-port")
        pb_grpc.add_SwarmNetworkServicer_to_server(servicer, api)
        if self.chain is not None:
            peer = self._server(self.config.p2p_port, "--sn-p2p-port")
            pb_grpc.add_LedgerPeerServicer_to_server(
                LedgerPeerServicer(self.chain.handle_json_rpc, directory, authorizer,
                                   self.loop.poke), peer)
        self.loop.start()
        self._loop_started = True
        for server in self._servers:
            server.start()
        log.info("SN %s (%s) ready in %.2f s: ledger %s, contract %s", self.identity.node_id,
                 "sentinel" if self.config.sentinel else "joined", time.perf_counter() - started,
                 self.ledger_kind, self.ledger.address)
        # Users (and scripts) wait for exactly this line.
        print(READY_LINE.format(port=self.config.api_port), flush=True)

    def _recover_latest_merged(self, rounds: RoundBook, lookback: int = 16) -> None:
        """A restart between a seal and its merge: the latest merged model is an earlier
        round's, which late joiners and catching-up nodes load."""
        last = rounds.last_sealed
        if rounds.latest_merged is not None or not last:
            return
        for round_number in range(last - 1, max(0, last - lookback), -1):
            merged = self.ledger.round_info(round_number).merged_digest
            if merged:
                rounds.note_merged(round_number, merged)
                return

    def stop(self) -> None:
        """Stops whatever start() got to; safe at any point of it."""
        if self.loop is not None:
            self.loop.rounds.close()
        for server in self._servers:
            server.stop(grace=2).wait(5)
        if self._loop_started:
            self.loop.stop()
        if self._tunnel is not None:
            self._tunnel.close()
        if self.chain is not None:
            self.chain.close()

    def _server(self, port: int, flag: str) -> grpc.Server:
        server = new_server(f"sn-{port}", MAX_MESSAGE_BYTES, workers=SERVER_WORKERS)
        try:
            listen_secure(server, f"{self.config.bind_ip}:{port}",
                          self.tls.server_credentials(), flag)
        except ListenError as error:
            raise StartupError(str(error)) from None
        self._servers.append(server)
        return server

    # --- ledger ---------------------------------------------------------------------

    def _open_sentinel_ledger(self) -> LedgerClient:
        funder = None
        if self.config.ledger_url:
            self.ledger_kind = "external"
            w3 = self._connect(self.config.ledger_url)
            key = self._read_key_file(self.config.ledger_key_file)
            try:
                account = external_account(w3, key)
            except LedgerError as error:
                raise StartupError(f"{error}: give it with --ledger-key-file") from None
        else:
            self.ledger_kind = "embedded"
            self.chain = EmbeddedChain(self.config.data_dir / "chain")
            w3, account = self.chain.w3, None  # its own key under data_dir, funded below
            funder = self.chain.dev_accounts[0]
        reopened = (self.config.data_dir / "ledger.json").exists()
        try:
            client = open_or_deploy(w3, self.config.data_dir,
                                    sentinel_node_id=self.identity.node_id,
                                    fingerprint=self.identity.fingerprint,
                                    endpoint=self.config.endpoint, account=account, funder=funder)
        except LedgerError as error:
            raise StartupError(f"cannot open the ledger: {error}") from None
        log.info("%s the ledger: contract %s", "reopened" if reopened else "deployed",
                 client.address)
        self._reregister_self(client)
        return client

    def _reregister_self(self, client: LedgerClient) -> None:
        """A restarted sentinel may have a new endpoint; keep its record current."""
        me = client.member(self.identity.node_id)
        if me is not None and me.endpoint != self.config.endpoint:
            client.register_sn(self.identity.node_id, self.identity.fingerprint,
                               self.config.endpoint, client.account.address)

    def _join(self) -> LedgerClient:
        account = load_or_create_account(self.config.data_dir / "ledger-account.key")
        target = self.config.sentinel_target
        with SNClient(target, self.tls, timeout_s=30.0) as sentinel:
            try:
                sentinel.wait_ready(timeout_s=30.0)
                reply = sentinel.join_network(account.address, self.config.endpoint)
            except SwarmNetworkError as error:
                raise StartupError(f"cannot join the swarm through the sentinel at {target}: "
                                   f"{error}") from None
        if self.config.ledger_url or reply.ledger_kind == "external":
            self.ledger_kind = "external"
            w3 = self._connect(self.config.ledger_url or reply.ledger_url)
        else:
            self.ledger_kind = "tunnel"
            host = target.rsplit(":", 1)[0]
            self._tunnel = LedgerTunnelProvider(f"{host}:{reply.ledger_peer_port}", self.tls)
            w3 = Web3(self._tunnel)
        if w3.eth.chain_id != reply.chain_id:
            raise StartupError(f"the ledger reached has chain id {w3.eth.chain_id}, but the "
                               f"sentinel's has {reply.chain_id}: check --ledger-url")
        return LedgerClient(w3, reply.contract_address, account)

    def _admit_sn(self, who: NodeIdentity, account_address: str, endpoint: str) -> pb.JoinReply:
        """Sentinel side of JoinNetwork: record the SN on the ledger and fund its account."""
        if not Web3.is_address(account_address):
            raise ValueError(f"account {account_address!r} is not an Ethereum address")
        account_address = Web3.to_checksum_address(account_address)
        future = self.loop.submit(lambda ledger: ledger.register_sn(
            who.node_id, who.fingerprint, endpoint, account_address))
        future.result(timeout=60)
        w3 = self.ledger.w3
        if w3.eth.get_balance(account_address) < JOIN_FUNDING_WEI // 10:
            # The embedded chain's dev account is rich; on an external chain the
            # sentinel pays from its own account.
            funder = self.chain.dev_accounts[0] if self.chain else self.ledger.account
            self.loop.submit(lambda ledger: fund(w3, funder, account_address,
                                                 JOIN_FUNDING_WEI)).result(timeout=60)
        self.loop.refresh_members_now()
        return pb.JoinReply(contract_address=self.ledger.address, chain_id=w3.eth.chain_id,
                            ledger_kind="embedded" if self.chain else "external",
                            ledger_url=self.config.ledger_url or "",
                            ledger_peer_port=self.config.p2p_port if self.chain else 0)

    def _connect(self, url: str) -> Web3:
        try:
            return connect_external(url)
        except Exception as error:  # web3 raises several kinds; all mean the same here
            raise StartupError(f"cannot reach the ledger at --ledger-url {url}: {error}") from None

    @staticmethod
    def _read_key_file(path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return path.read_text().strip()
        except OSError as error:
            raise StartupError(f"--ledger-key-file {path}: {error.strerror}") from None
