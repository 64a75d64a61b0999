"""Every SwarmLedger rule, exercised through LedgerClient on the embedded chain."""
from __future__ import annotations

import statistics
import time

import pytest

from swarm.ledger import (
    ROLE_SL,
    ROLE_SN,
    STATUS_ACTIVE,
    STATUS_INACTIVE,
    STATUS_REVOKED,
    LedgerError,
    node_key,
)
from swarm.ledger.client import _gas

from .conftest import SENTINEL, SLS1, SLS2, SN2, digest, fp


def reverts(reason: str, function: str):
    """Expect LedgerError "<function>: <reason>"."""
    return pytest.raises(LedgerError, match=f"^{function}: {reason}$")


def test_deploy_registers_sentinel_as_sn(swarm):
    sentinel = swarm.sn1.member(SENTINEL)
    assert sentinel.role == ROLE_SN and sentinel.role_name == "sn"
    assert sentinel.fingerprint == fp(SENTINEL)
    assert sentinel.endpoint == "10.0.0.1:30304"
    assert sentinel.status == STATUS_ACTIVE and sentinel.active
    assert sentinel.controller == swarm.sn1.account.address
    assert sentinel.last_seen > 0
    assert swarm.sn1.sentinel() == swarm.sn1.account.address
    assert swarm.sn1.member_id_of_account(swarm.sn1.account.address) == node_key(SENTINEL)
    assert swarm.sn1.member_id_of_account(swarm.outsider.account.address) is None
    names = [m.node_id for m in swarm.sn1.members()]
    assert names == [SENTINEL, SN2, *SLS1, *SLS2]
    assert swarm.sn1.member_count() == 6
    assert swarm.sn1.member_id_at(0) == node_key(SENTINEL)
    with reverts("index out of range", "memberIdAt"):
        swarm.sn1.member_id_at(6)
    assert swarm.sn1.member("nobody/sl-9") is None


def test_non_member_cannot_act(swarm):
    out = swarm.outsider
    with reverts("caller is not a member", "registerNode"):
        out.register_node("evil/sl-1", "sl", fp("evil"), "x")
    with reverts("caller is not a member", "registerSN"):
        out.register_sn("evil/sn-1", fp("evil"), "x", out.account.address)
    with reverts("caller is not a member", "configure"):
        out.configure(1, "{}")
    with reverts("caller is not a member", "checkIn"):
        out.check_in(1, [SLS1[0]], [1], [digest(1)])
    with reverts("caller is not a member", "seal"):
        out.seal(1, [SLS1[0]])
    with reverts("caller is not a member", "revoke"):
        out.revoke(fp(SLS1[0]), "no")
    with reverts("caller is not a member", "setStatus"):
        out.set_status(SLS1[0], STATUS_INACTIVE)
    assert swarm.sn1.member("evil/sl-1") is None


def test_only_sn_members_register_sns_and_roles_are_checked(swarm):
    with reverts("role must be sl or swci", "registerNode"):
        swarm.sn1.register_node("site3/sn-1", ROLE_SN, fp("site3/sn-1"), "x")
    with reverts("role mismatch", "registerSN"):
        swarm.sn1.register_sn(SLS1[0], fp(SLS1[0]), "x", swarm.outsider.account.address)
    with reverts("account already bound", "registerSN"):
        swarm.sn1.register_sn("site3/sn-1", fp("site3/sn-1"), "x", swarm.sn2.account.address)
    res = swarm.sn1.register_node("site1/swci-1", "swci", fp("site1/swci-1"), "x")
    assert res.named("MemberRegistered")[0].args["isNew"] is True
    with reverts("not an sl member", "checkIn"):
        swarm.sn1.check_in(1, ["site1/swci-1"], [1], [digest(1)])


def test_reregistration_same_fingerprint_moves_node(swarm):
    name = SLS1[0]
    res = swarm.sn2.register_node(name, "sl", fp(name), "new-host:30305")
    ev = res.named("MemberRegistered")[0]
    assert ev.args["isNew"] is False and ev.args["controller"] == swarm.sn2.account.address
    m = swarm.sn1.member(name)
    assert m.endpoint == "new-host:30305" and m.controller == swarm.sn2.account.address
    assert swarm.sn1.member_count() == 6  # updated, not added
    with reverts("not controller", "checkIn"):
        swarm.sn1.check_in(1, [name], [1], [digest(1)])
    swarm.sn2.check_in(1, [name], [1], [digest(1)])


def test_fingerprint_mismatch_and_reuse_revert(swarm):
    with reverts("fingerprint mismatch", "registerNode"):
        swarm.sn1.register_node(SLS1[0], "sl", fp("another certificate"), "x")
    with reverts("fingerprint already registered", "registerNode"):
        swarm.sn1.register_node("site1/sl-9", "sl", fp(SLS1[0]), "x")
    with reverts("fingerprint mismatch", "registerSN"):
        swarm.sn1.register_sn(SN2, fp("forged"), "x", swarm.sn2.account.address)
    assert swarm.sn1.member(SLS1[0]).fingerprint == fp(SLS1[0])


def test_sn_cannot_act_for_nodes_it_does_not_control(swarm):
    swarm.sn1.configure(1, "{}")
    theirs = SLS2[0]
    with reverts("not controller", "checkIn"):
        swarm.sn1.check_in(1, [SLS1[0], theirs], [1, 1], [digest(1), digest(2)])
    with reverts("not controller", "setStatus"):
        swarm.sn1.set_status(theirs, STATUS_INACTIVE)
    with reverts("not controller", "markFinished"):
        swarm.sn1.mark_finished(theirs)
    swarm.sn2.check_in_and_seal(1, [theirs], [1], [digest(1)])
    with reverts("not controller", "commitMerged"):
        swarm.sn1.commit_merged(1, theirs, digest("m"))
    with reverts("unknown member", "setStatus"):
        swarm.sn1.set_status("nobody/sl-1", STATUS_INACTIVE)


def test_configure_once(swarm):
    assert swarm.sn1.config().configured is False
    with reverts("not configured", "seal"):
        swarm.sn1.seal(1, [SLS1[0]])
    with reverts("minPeers must be >= 1", "configure"):
        swarm.sn1.configure(0, "{}")
    res = swarm.sn1.configure(2, {"merge_method": "mean", "sync_frequency": 64})
    assert res.named("Configured")[0].args["minPeers"] == 2
    cfg = swarm.sn2.config()
    assert cfg.configured and cfg.min_peers == 2
    assert cfg.config() == {"merge_method": "mean", "sync_frequency": 64}
    with reverts("already configured", "configure"):
        swarm.sn2.configure(3, "{}")
    assert swarm.sn1.config().min_peers == 2


def test_a_weight_zero_participant_checks_in_and_is_sealed(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, _ = SLS1
    sn1.check_in(1, [a], [0], [digest("no update")])
    assert sn1.check_in_of(1, a) == (0, digest("no update"), False)
    assert sn1.check_in_of(1, b) is None
    sn1.check_in_and_seal(1, [b], [30], [digest("b")], [a, b])
    info = sn1.round_info(1)
    assert info.weights == (0, 30) and sn1.check_in_of(1, a)[2]


def test_no_round_starts_once_min_peers_have_finished(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, c = SLS1
    sn1.check_in(1, [a, b, c], [1, 1, 1], [digest("a"), digest("b"), digest("c")])
    sn1.mark_finished(a)
    sn1.seal(1, [a, b, c])  # one finished node: the swarm goes on
    sn1.check_in(2, [a, b], [1, 1], [digest("a2"), digest("b2")])
    sn1.mark_finished(b)
    with reverts("swarm done", "seal"):
        sn1.seal(2, [a, b])
    with reverts("swarm done", "checkIn"):
        sn1.check_in(2, [c], [1], [digest("c2")])


def test_check_in_and_seal_rules(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, c = SLS1
    with reverts("round must be >= 1", "checkIn"):
        sn1.check_in(0, [a], [1], [digest(0)])
    with reverts("weight out of range", "checkIn"):
        sn1.check_in(1, [a], [101], [digest(1)])
    with reverts("empty digest", "checkIn"):
        sn1.check_in(1, [a], [1], [b"\x00" * 32])
    sn1.check_in(1, [a, b], [50, 100], [digest("a"), digest("b")])
    with reverts("already checked in", "checkIn"):
        sn1.check_in(1, [b], [1], [digest("b2")])
    with reverts("already checked in", "checkIn"):  # twice in one batch
        sn1.check_in(1, [c, c], [1, 1], [digest("c"), digest("c")])
    assert sn1.check_in_of(1, a) == (50, digest("a"), False)
    assert sn1.check_in_of(1, c) is None
    with reverts("below minPeers", "seal"):
        sn1.seal(1, [a])
    with reverts("not checked in", "seal"):
        sn1.seal(1, [a, c])
    with reverts("duplicate participant", "seal"):
        sn1.seal(1, [a, a])
    res = sn1.seal(1, [a, b])
    assert res.named("RoundSealed")[0].args["participants"] == (node_key(a), node_key(b))
    assert sn1.check_in_of(1, a) == (50, digest("a"), True)
    with reverts("round already sealed", "seal"):
        sn1.seal(1, [a, b])
    with reverts("round already sealed", "checkIn"):
        sn1.check_in(1, [c], [1], [digest("c")])
    # Rounds seal in strictly increasing order: round 3 closes round 2 for good.
    sn1.check_in(2, [a, b], [1, 1], [digest(2), digest(2)])
    sn1.check_in_and_seal(3, [a, b, c], [1, 2, 3], [digest(3)] * 3)
    with reverts("round older than last sealed", "seal"):
        sn1.seal(2, [a, b])
    with reverts("round older than last sealed", "checkIn"):
        sn1.check_in(2, [c], [1], [digest(2)])
    assert sn1.last_sealed_round() == 3
    info = sn1.round_info(3)
    assert info.sealed and info.weights == (1, 2, 3) and info.check_in_count == 3
    assert info.sealed_by == node_key(SENTINEL)
    assert not sn1.round_info(2).sealed and sn1.round_info(2).check_in_count == 2
    with pytest.raises(ValueError):
        sn1.check_in(4, [a, b], [1], [digest(4)])


def test_inactive_member_cannot_check_in(swarm):
    sn1 = swarm.sn1
    sn1.configure(1, "{}")
    res = sn1.set_status(SLS1[0], STATUS_INACTIVE)
    assert res.named("StatusChanged")[0].args["status"] == STATUS_INACTIVE
    with reverts("member not active", "checkIn"):
        sn1.check_in(1, [SLS1[0]], [1], [digest(1)])
    with reverts("status must be active or inactive", "setStatus"):
        sn1.set_status(SLS1[0], STATUS_REVOKED)
    sn1.set_status(SLS1[0], STATUS_ACTIVE)
    sn1.check_in(1, [SLS1[0]], [1], [digest(1)])
    # An SN that stepped down can only act again after reactivating itself.
    swarm.sn2.set_status(SN2, STATUS_INACTIVE)
    with reverts("caller not active", "checkIn"):
        swarm.sn2.check_in(1, SLS2, [1], [digest(1)])
    swarm.sn2.set_status(SN2, STATUS_ACTIVE)
    swarm.sn2.check_in(1, SLS2, [1], [digest(1)])


def test_multi_sn_round_and_events(swarm):
    sn1, sn2 = swarm.sn1, swarm.sn2
    start = sn1.block_number() + 1
    sn1.configure(3, "{}")
    sn1.check_in(1, SLS1[:2], [10, 20], [digest("s1a"), digest("s1b")])
    # SN2 checks in its own node and seals the round with everyone's check-ins.
    res = sn2.check_in_and_seal(1, SLS2, [30], [digest("s2")], seal_ids=[*SLS1[:2], *SLS2])
    assert [e.name for e in res.events] == ["CheckedIn", "RoundSealed"]
    info = sn1.round_info(1)
    assert info.participants == tuple(node_key(n) for n in [*SLS1[:2], *SLS2])
    assert info.weights == (10, 20, 30)
    assert info.digests == (digest("s1a"), digest("s1b"), digest("s2"))
    assert info.merged_digest is None and info.sealed_by == node_key(SN2)

    events, nxt = sn1.events_since(start)
    assert [e.name for e in events] == ["Configured", "CheckedIn", "CheckedIn", "RoundSealed"]
    first = events[1]
    assert first.args["round"] == 1 and first.args["by"] == node_key(SENTINEL)
    assert first.args["ids"] == (node_key(SLS1[0]), node_key(SLS1[1]))
    assert first.args["weights"] == (10, 20)
    assert nxt == sn1.block_number() + 1
    assert sn1.events_since(nxt) == ([], nxt)
    all_events, _ = sn1.events_since(0)
    assert [e.name for e in all_events].count("MemberRegistered") == 6
    assert all(e.block_number < nxt for e in all_events)


def test_commit_merged_and_mismatch_evidence(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, c = SLS1
    sn1.check_in(1, [a, b, c], [1, 1, 1], [digest(1)] * 3)
    with reverts("round not sealed", "commitMerged"):
        sn1.commit_merged(1, a, digest("m"))
    sn1.seal(1, [a, b])
    with reverts("not a participant", "commitMerged"):
        sn1.commit_merged(1, c, digest("m"))
    first = sn1.commit_merged(1, a, digest("m"))
    assert [e.name for e in first.events] == ["MergeCommitted"]
    assert sn1.round_info(1).merged_digest is None  # 1 of 2 is no majority
    assert sn1.commit_merged(1, a, digest("m")).events == ()  # a retry: not counted twice
    same = sn1.commit_merged(1, b, digest("m"))
    assert [e.name for e in same.events] == ["MergeCommitted", "MergeAgreed"]
    assert sn1.round_info(1).merged_digest == digest("m")
    assert sn1.commit_merged(1, b, digest("m")).events == ()
    bad = sn1.commit_merged(1, b, digest("other"))
    [ev] = bad.named("MergeMismatch")
    assert ev.args == {"round": 1, "id": node_key(b), "expected": digest("m"), "actual": digest("other")}
    assert sn1.round_info(1).merged_digest == digest("m")  # evidence kept, value unchanged
    # A participant's commit still counts once it has checked in for the next round.
    sn1.check_in(2, [c, b], [1, 1], [digest(2)] * 2)
    with reverts("not a participant", "commitMerged"):
        sn1.commit_merged(1, c, digest("m"))
    assert sn1.commit_merged(1, b, digest("late")).named("MergeMismatch")
    sn1.seal(2, [b, c])
    with reverts("not a participant", "commitMerged"):
        sn1.commit_merged(2, a, digest("m2"))
    assert sn1.commit_merged(2, c, digest("m2")).named("MergeCommitted")


def test_revoked_members_cannot_act_or_be_checked_in(swarm):
    sn1, sn2 = swarm.sn1, swarm.sn2
    sn1.configure(1, "{}")
    victim = SLS1[1]
    sn1.check_in(1, [victim], [1], [digest(1)])
    res = sn2.revoke(fp(victim), "private key leaked")
    [ev] = res.named("Revoked")
    assert ev.args["id"] == node_key(victim) and ev.args["reason"] == "private key leaked"
    assert sn1.is_revoked(fp(victim)) and sn1.member(victim).revoked
    with reverts("member revoked", "seal"):  # checked in before the revocation
        sn1.seal(1, [victim])
    with reverts("member revoked", "checkIn"):
        sn1.check_in(2, [victim], [1], [digest(2)])
    with reverts("member revoked", "setStatus"):
        sn1.set_status(victim, STATUS_ACTIVE)
    with reverts("member revoked", "markFinished"):
        sn1.mark_finished(victim)
    with reverts("member revoked", "registerNode"):
        sn1.register_node(victim, "sl", fp("fresh certificate"), "x")
    with reverts("fingerprint revoked", "registerNode"):
        sn1.register_node("site1/sl-new", "sl", fp(victim), "x")
    with reverts("already revoked", "revoke"):
        sn1.revoke(fp(victim), "again")
    # A revoked SN loses every right at once.
    sn1.revoke(fp(SN2), "compromised")
    with reverts("caller revoked", "checkIn"):
        sn2.check_in(2, SLS2, [1], [digest(2)])
    with reverts("caller revoked", "revoke"):
        sn2.revoke(fp(SLS1[0]), "spite")
    # An unknown fingerprint can be revoked ahead of time.
    sn1.revoke(fp("never-registered"), "pre-emptive")
    with reverts("fingerprint revoked", "registerNode"):
        sn1.register_node("site9/sl-1", "sl", fp("never-registered"), "x")


def test_mark_finished_counts_once(swarm):
    sn1 = swarm.sn1
    assert sn1.finished_count() == 0
    res = sn1.mark_finished(SLS1[0])
    assert res.named("NodeFinished")[0].args["finishedCount"] == 1
    swarm.sn2.mark_finished(SLS2[0])
    assert sn1.finished_count() == 2 and sn1.is_finished(SLS2[0]) and not sn1.is_finished(SLS1[1])
    with reverts("already finished", "markFinished"):
        sn1.mark_finished(SLS1[0])


def test_ledger_error_names_function_and_tx(swarm):
    with pytest.raises(LedgerError) as err:
        swarm.sn1.seal(1, [SLS1[0]])
    assert err.value.function == "seal" and err.value.reason == "not configured"
    assert len(err.value.tx_hash) == 32
    # The nonce tracker survived the reverted transaction.
    swarm.sn1.configure(1, "{}")


def test_gas_limits_cover_the_participant_bound(chain, tmp_path):
    """checkInAndSeal with MAX_PARTICIPANTS ids fits its gas formula and the block."""
    from swarm.ledger import MAX_PARTICIPANTS, open_or_deploy

    sn = open_or_deploy(chain.w3, tmp_path / "big", sentinel_node_id="s/" + "n" * 126,
                        fingerprint=fp("big"), endpoint="e" * 256, funder=chain.dev_accounts[0])
    sn.configure(MAX_PARTICIPANTS, "c" * 4096)
    ids = [f"{i:03d}/" + "l" * 124 for i in range(MAX_PARTICIPANTS)]
    for i, name in enumerate(ids):
        res = sn.register_node(name, "sl", fp(name), "e" * 256)
        assert res.gas_used < _gas("registerNode", strings=(name, "e" * 256))
    res = sn.check_in_and_seal(1, ids, [100] * len(ids), [digest(i) for i in range(len(ids))])
    limit = _gas("checkInAndSeal", ids=len(ids))
    block_limit = chain.w3.eth.get_block("latest")["gasLimit"]
    assert res.gas_used < limit <= block_limit
    assert sn.round_info(1).participants == tuple(node_key(n) for n in ids)
    # Worst case for a commit batch: every participant votes for a digest of its own.
    votes = sn.commit_merged_batch(1, ids, [digest(f"m{i}") for i in range(len(ids))])
    assert votes.gas_used < _gas("commitMerged", len(ids)) <= block_limit
    assert len(votes.named("MergeCommitted")) == len(ids) and votes.named("MergeFailed")
    # Later rounds rewrite the same per-node slots: cheaper than the first.
    again = sn.check_in_and_seal(2, ids, [100] * len(ids), [digest(i) for i in range(len(ids))])
    assert again.gas_used < res.gas_used
    print(f"\n[ledger] checkInAndSeal, {len(ids)} ids: {res.gas_used} gas (first round), "
          f"{again.gas_used} (later rounds)")


def test_round_latency_embedded(swarm, capsys):
    """Control-plane cost of one 8-peer round on the embedded chain (one transaction)."""
    sn = swarm.sn1
    sn.configure(8, "{}")
    names = [f"site{i}/sl-9" for i in range(8)]
    for name in names:
        sn.register_node(name, ROLE_SL, fp(name), "x")
    times = []
    for rnd in range(1, 11):
        t0 = time.perf_counter()
        sn.check_in_and_seal(rnd, names, [1] * 8, [digest(rnd)] * 8)
        times.append(time.perf_counter() - t0)
    median_ms = statistics.median(times) * 1000
    with capsys.disabled():
        print(f"\n[ledger] embedded checkInAndSeal(8 ids): median {median_ms:.1f} ms over {len(times)} rounds")
    assert median_ms < 1000


def test_concurrent_senders_share_one_nonce_sequence(swarm):
    """Threads sending through one account (two clients, plus fund()) never collide."""
    import threading

    from swarm.ledger import LedgerClient, fund

    sn1 = swarm.sn1
    twin = LedgerClient(sn1.w3, sn1.address, sn1.account)  # e.g. the SN API and the round loop
    errors: list[BaseException] = []

    def work(client, prefix):
        try:
            for i in range(5):
                name = f"{prefix}/sl-{i}"
                client.register_node(name, "sl", fp(name), "x")
                client.member(name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def pay():
        try:
            for _ in range(5):
                fund(sn1.w3, sn1.account, swarm.outsider.account.address, 1)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c, p)) for c, p in [(sn1, "t1"), (twin, "t2"), (sn1, "t3")]]
    threads.append(threading.Thread(target=pay))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sn1.member_count() == 6 + 15
