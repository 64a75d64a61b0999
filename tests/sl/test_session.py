"""The session record: parsed once from the ledger's JSON, compared with a sidecar's wishes."""

from __future__ import annotations

import json

import pytest

from swarm.merging import CenteredClipping, Krum
from swarm.session import SCHEMA_VERSION, Session, SessionFormatError


def test_a_proposal_round_trips_through_the_ledger_json():
    asked = Session.from_hello({"merge_method": "krum", "merge_params": {"f": 1},
                                "min_peers": 4, "sync_frequency": 8, "node_weightage": 3},
                               "ab" * 32)
    recorded = Session.from_json(asked.to_json(), 4)
    assert recorded == asked and recorded.schema == SCHEMA_VERSION
    assert isinstance(recorded.build_merge(), Krum) and recorded.build_merge().f == 1
    assert "node_weightage" not in json.loads(asked.to_json())  # per node, not the session's


def test_a_session_recorded_before_the_schema_still_parses():
    old = json.dumps({"merge_method": "centeredclipping", "sync_frequency": 4, "loss": "x"})
    session = Session.from_json(old, 2)
    assert isinstance(session.build_merge(), CenteredClipping) and session.min_peers == 2


def test_a_newer_schema_or_a_bad_record_is_refused_by_name():
    with pytest.raises(SessionFormatError, match="schema 99"):
        Session.from_json(json.dumps({"schema": 99}), 1)
    with pytest.raises(SessionFormatError, match="not one of"):
        Session.from_json(json.dumps({"merge_method": "avg"}), 1)
    with pytest.raises(SessionFormatError, match="mergeParams"):
        Session.from_hello({"merge_method": "trimmedmean", "merge_params": {"f": 1}}, "")


def test_merge_settings_are_refused_the_rest_warned_with_both_values():
    recorded = Session(min_peers=3, merge_method="coordmedian", sync_frequency=8)
    asked = Session(min_peers=2, merge_method="mean", sync_frequency=8)
    lines = {m.name: (m.refused, m.line()) for m in recorded.mismatches(asked)}
    assert set(lines) == {"mergeMethod", "minPeers"}
    refused, line = lines["mergeMethod"]
    assert refused and "mergeMethod='mean'" in line and "mergeMethod='coordmedian'" in line
    assert lines["minPeers"][0] is False
    assert recorded.mismatches(recorded) == []
