"""The SN's ledger thread follows the ledger through its events, not by re-reading it."""
from __future__ import annotations

import time

from sn_node.directory import MemberDirectory
from sn_node.ledger_loop import LedgerLoop
from sn_node.rounds import RoundBook
from swarm.ledger import STATUS_INACTIVE, LedgerClient, node_key

from .conftest import SLS1, SLS2, digest, fp


class CountingClient(LedgerClient):
    """The sentinel's client, counting the reads the loop is meant to avoid."""

    def __init__(self, other: LedgerClient):
        super().__init__(other.w3, other.address, other.account)
        self.calls = {"members": 0, "round_info": 0}

    def members(self):
        self.calls["members"] += 1
        return super().members()

    def round_info(self, round):
        self.calls["round_info"] += 1
        return super().round_info(round)


def wait_for(condition, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def test_members_and_seals_come_from_events(swarm):
    swarm.sn1.configure(1, "{}")
    client = CountingClient(swarm.sn1)
    directory = MemberDirectory(client.account.address, 60.0, ledger_is_revoked=client.is_revoked)
    rounds = RoundBook(0.0)
    loop = LedgerLoop(client, directory, rounds, fast_poll_s=0.01, idle_poll_s=0.05)
    loop.load()
    loop.start()
    try:
        assert client.calls["members"] == 1
        # Another SN registers a node, steps it down, and the sentinel revokes one of its own.
        swarm.sn2.register_node("site2/sl-9", "sl", fp("site2/sl-9"), "10.0.0.9:1")
        wait_for(lambda: directory.by_node_id("site2/sl-9") is not None)
        new = directory.by_node_id("site2/sl-9")
        assert new.active and new.endpoint == "10.0.0.9:1" and new.controller == swarm.sn2.account.address
        swarm.sn2.set_status("site2/sl-9", STATUS_INACTIVE)
        wait_for(lambda: directory.by_node_id("site2/sl-9").status == STATUS_INACTIVE)
        loop.submit(lambda ledger: ledger.revoke(fp(SLS1[2]), "test")).result(30)
        wait_for(lambda: directory.by_node_id(SLS1[2]).revoked)
        assert directory.is_revoked(fp(SLS1[2]).hex())
        # A round sealed by the other SN arrives whole in its event.
        swarm.sn2.check_in_and_seal(1, SLS2, [7], [digest("s2")])
        wait_for(lambda: rounds.sealed(1) is not None)
        sealed = rounds.sealed(1)
        assert sealed.keys == (node_key(SLS2[0]),) and sealed.weights == (7,)
        assert sealed.digests == (digest("s2"),)
        # A ledger job (here a merged digest) no longer triggers a re-read of all members.
        swarm.sn2.commit_merged(1, SLS2[0], digest("m"))
        loop.submit(lambda ledger: ledger.block_number()).result(30)
        wait_for(lambda: rounds.sealed(1).merged_digest == digest("m"))
        assert client.calls == {"members": 1, "round_info": 0}
        # The directory matches a fresh read of the ledger.
        fresh = {m.node_id: (m.status, m.endpoint, m.controller) for m in swarm.sn1.members()}
        assert {m.node_id: (m.status, m.endpoint, m.controller) for m in directory.all()} == fresh
    finally:
        loop.stop()
