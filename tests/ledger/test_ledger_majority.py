"""The round's merged digest is the one a strict majority of its sealed participants
committed, never merely the first committed (issue 8), on the embedded ledger."""
from __future__ import annotations

from swarm.ledger import MergeStatus, node_key

from .conftest import SLS1, SLS2, digest


def seal_four(swarm, round_number: int = 1) -> list[str]:
    """Round sealed with four participants: three under the sentinel, one under SN2."""
    sn1, sn2 = swarm.sn1, swarm.sn2
    if round_number == 1:
        sn1.configure(2, "{}")
    sn1.check_in(round_number, SLS1, [1, 1, 1], [digest(i) for i in range(3)])
    sn2.check_in_and_seal(round_number, SLS2, [1], [digest(3)], seal_ids=[*SLS1, *SLS2])
    return [*SLS1, *SLS2]


def test_a_minority_digest_committed_first_does_not_become_the_record(swarm):
    sn1, sn2 = swarm.sn1, swarm.sn2
    a, b, c, d = seal_four(swarm)
    honest, made_up = digest("honest"), digest("made up")
    # d (SN2's node) commits a made-up digest first: a vote, not the record.
    first = sn2.commit_merged(1, d, made_up)
    assert [e.name for e in first.events] == ["MergeCommitted"]
    state = sn1.merge_status(1)
    assert (state.status, state.digest, state.votes, state.top_votes, state.participants) == \
        (MergeStatus.PENDING, None, 1, 1, 4)
    assert sn1.round_info(1).merged_digest is None
    # Two honest votes of four: still no strict majority.
    assert [e.name for e in sn1.commit_merged_batch(1, [a, b], [honest, honest]).events] == \
        ["MergeCommitted", "MergeCommitted"]
    assert sn1.merge_status(1).status == MergeStatus.PENDING
    assert sn1.votes_for(1, honest) == 2 and sn1.votes_for(1, made_up) == 1
    # The third honest vote is the majority (3 of 4): the honest digest is the record.
    third = sn1.commit_merged(1, c, honest)
    assert [e.name for e in third.events] == ["MergeCommitted", "MergeAgreed"]
    [agreed] = third.named("MergeAgreed")
    assert agreed.args == {"round": 1, "digest": honest, "votes": 3, "participants": 4}
    assert sn1.round_info(1).merged_digest == honest
    assert sn1.merge_status(1).status == MergeStatus.AGREED
    assert sn1.votes_for(1, honest) == 0  # its tally word is freed once agreed
    # From now on a disagreeing commit is MergeMismatch evidence; the record stays.
    [mismatch] = sn2.commit_merged(1, d, made_up).named("MergeMismatch")
    assert mismatch.args == {"round": 1, "id": node_key(d), "expected": honest, "actual": made_up}
    assert sn1.round_info(1).merged_digest == honest


def test_within_one_batch_the_majority_wins_whatever_the_order(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, c = SLS1
    sn1.check_in_and_seal(1, [a, b, c], [1, 1, 1], [digest(i) for i in range(3)])
    res = sn1.commit_merged_batch(1, [c, a, b], [digest("x"), digest("m"), digest("m")])
    assert [e.name for e in res.events] == ["MergeCommitted", "MergeCommitted", "MergeCommitted",
                                            "MergeAgreed"]
    assert sn1.round_info(1).merged_digest == digest("m")


def test_two_participants_that_disagree_fail_the_merge_for_both(swarm):
    sn1 = swarm.sn1
    sn1.configure(2, "{}")
    a, b, _ = SLS1
    sn1.check_in_and_seal(1, [a, b], [1, 1], [digest(1), digest(2)])
    assert sn1.commit_merged(1, a, digest("m")).named("MergeCommitted")
    res = sn1.commit_merged(1, b, digest("other"))
    assert [e.name for e in res.events] == ["MergeCommitted", "MergeFailed"]
    assert res.named("MergeFailed")[0].args == {"round": 1, "votes": 2, "topVotes": 1,
                                                "participants": 2}
    state = sn1.merge_status(1)
    assert state.status == MergeStatus.FAILED and state.digest is None
    assert sn1.round_info(1).merged_digest is None
    # Nothing changes it afterwards: b's retry is not a second vote.
    assert sn1.commit_merged(1, b, digest("m")).events == ()
    assert sn1.merge_status(1).status == MergeStatus.FAILED


def test_failure_is_declared_once_no_digest_can_reach_a_majority(swarm):
    sn1, sn2 = swarm.sn1, swarm.sn2
    a, b, c, d = seal_four(swarm)
    # 4 participants, majority 3: after x, y the best is 1 + 2 remaining = 3, still possible.
    sn1.commit_merged_batch(1, [a, b], [digest("x"), digest("y")])
    assert sn1.merge_status(1).status == MergeStatus.PENDING
    # A third digest: the best is now 1 + 1 = 2 < 3, so the merge failed for all.
    res = sn1.commit_merged(1, c, digest("z"))
    assert res.named("MergeFailed") and sn1.merge_status(1).status == MergeStatus.FAILED
    # The last vote cannot revive it, and the failure is not declared twice.
    assert sn2.commit_merged(1, d, digest("x")).named("MergeFailed") == []
    assert sn1.merge_status(1).status == MergeStatus.FAILED


def test_a_single_participant_agrees_with_itself(swarm):
    sn1 = swarm.sn1
    sn1.configure(1, "{}")
    sn1.check_in_and_seal(1, [SLS1[0]], [1], [digest(1)])
    res = sn1.commit_merged(1, SLS1[0], digest("m"))
    assert [e.name for e in res.events] == ["MergeCommitted", "MergeAgreed"]
    assert sn1.merge_status(1).status == MergeStatus.AGREED


def test_gas_per_commit(swarm):
    """One commit transaction per participant; the cost of counting votes, measured."""
    sn1 = swarm.sn1
    sn1.configure(3, "{}")
    gas: dict[str, list[int]] = {"pending": [], "agreeing": [], "batch of 3": []}
    for r in range(1, 5):
        sn1.check_in_and_seal(r, SLS1, [1, 1, 1], [digest(i) for i in range(3)])
        m = digest(f"m{r}")
        if r % 2:
            gas["pending"].append(sn1.commit_merged(r, SLS1[0], m).gas_used)
            gas["agreeing"].append(sn1.commit_merged(r, SLS1[1], m).gas_used)
            sn1.commit_merged(r, SLS1[2], m)
        else:
            gas["batch of 3"].append(sn1.commit_merged_batch(r, SLS1, [m] * 3).gas_used)
        assert sn1.round_info(r).merged_digest == m
    print(f"\n[ledger] commitMerged gas (later rounds): {({k: v[-1] for k, v in gas.items()})}")
    assert gas["agreeing"][-1] < 110_000


def test_audit_names_the_outvoted_first_commit_and_a_failed_merge(swarm):
    """`swarm ledger verify` replays the majority rule on its own."""
    from swarm.ledger.audit import FindingCode, build_report, read_history

    sn1, sn2 = swarm.sn1, swarm.sn2
    a, b, c, d = seal_four(swarm)
    sn2.commit_merged(1, d, digest("made up"))  # first, and outvoted
    sn1.commit_merged_batch(1, [a, b, c], [digest("honest")] * 3)
    sn1.check_in_and_seal(2, [a, b], [1, 1], [digest(5), digest(6)])
    sn1.commit_merged_batch(2, [a, b], [digest("x"), digest("y")])
    report = build_report(read_history(swarm.chain.w3, sn1.address))
    findings = [(f.code, f.round, f.node) for f in report.findings]
    assert findings == [(FindingCode.MERGE_MISMATCH, 1, d), (FindingCode.MERGE_FAILED, 2, None)], \
        report.findings
    first, second = report.rounds
    assert first.merge == "agreed" and first.merged_digest == "0x" + digest("honest").hex()
    assert first.committed == [a, b, c] and first.disagreements[0]["node"] == d
    assert second.merge == "failed" and second.merged_digest == ""
