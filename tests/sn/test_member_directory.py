"""MemberDirectory's liveness with an injected clock: who is silent, and since when."""

from __future__ import annotations

from swarm.ledger import Member, node_key

from sn_node.directory import MemberDirectory

ME = "0x" + "11" * 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def sl(node_id: str, controller: str = ME, status: int = 1) -> Member:
    # Member(key, node_id, role, fingerprint, endpoint, status, last_seen, controller)
    return Member(node_key(node_id), node_id, 2, b"\x01" * 32, "127.0.0.1:1", status, 0,
                  controller)


def directory(clock: FakeClock) -> MemberDirectory:
    return MemberDirectory(ME, liveness_timeout_s=10, ledger_is_revoked=lambda _: False,
                           clock=clock)


def silent(d: MemberDirectory) -> list[str]:
    return [m.node_id for m in d.silent_members()]


def test_a_node_registering_long_after_the_sn_started_gets_a_full_timeout():
    clock = FakeClock()
    d = directory(clock)
    clock.now += 60  # the SN has run a minute before this node shows up
    d.replace([sl("a/sl-1")])
    assert silent(d) == []
    clock.now += 9.9
    assert silent(d) == []
    clock.now += 0.2
    assert silent(d) == ["a/sl-1"]


def test_heartbeats_keep_a_node_alive_and_silence_is_reported_once():
    clock = FakeClock()
    d = directory(clock)
    d.replace([sl("a/sl-1"), sl("b/sl-2")])
    for _ in range(5):
        clock.now += 4
        d.heartbeat(node_key("a/sl-1"))
    assert silent(d) == ["b/sl-2"]
    assert d.alive(node_key("a/sl-1")) and not d.alive(node_key("b/sl-2"))
    d.mark_inactive(node_key("b/sl-2"))
    assert silent(d) == []  # marked: not again
    assert d.heartbeat(node_key("b/sl-2")) is True  # back: the SN reactivates it


def test_only_active_sl_nodes_controlled_here_are_watched():
    clock = FakeClock()
    d = directory(clock)
    d.replace([sl("a/sl-1", controller="0x" + "22" * 20), sl("b/sl-2", status=2)])
    clock.now += 100
    assert silent(d) == []
