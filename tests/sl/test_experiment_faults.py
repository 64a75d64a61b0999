"""run-sl's hidden --experiment-faults: Fault names for chaos experiments, through the
same outgoing hook the tests use."""

from __future__ import annotations

import pytest

from sl_node.cli import build_parser, parse
from sl_node.exchange import Fault, FaultHook
from sl_node.exchange.faults import hook_for, send_as_is

BASE = ["--cert", "c.pem", "--key", "k.pem", "--capath", "ca", "--ml-cmd", "train.py"]


def test_the_flag_is_hidden_from_help():
    assert "experiment" not in build_parser().format_help()


def test_fault_names_reach_the_node_config():
    config, _, _ = parse(BASE + ["--experiment-faults", "veto_all, EQUIVOCATE_MERGED"])
    assert config.experiment_faults == {Fault.VETO_ALL, Fault.EQUIVOCATE_MERGED}
    assert isinstance(hook_for(config.experiment_faults), FaultHook)


def test_without_the_flag_the_node_sends_as_is():
    config, _, _ = parse(BASE)
    assert config.experiment_faults == frozenset()
    assert hook_for(config.experiment_faults) is send_as_is


def test_an_unknown_fault_is_refused_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(BASE + ["--experiment-faults", "veto_al"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--experiment-faults" in err and "'veto_al'" in err and "equivocate_merged" in err
