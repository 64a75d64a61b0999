"""The lab grids in examples/lab expand to the tasks their README describes, and every
task's parameters (attacks included) are ones the lab accepts."""

from __future__ import annotations

from collections import Counter

import pytest

from swarm.lab import grid
from swarm.lab.tasks import attack_of, parse_task
from swarm_testing import REPO

LAB = REPO / "examples" / "lab"


@pytest.mark.parametrize("name,tasks", [("poisoning.yaml", 96), ("swarm_vs_local.yaml", 12)])
def test_lab_grid_expands_to_valid_tasks(name, tasks):
    plan = grid.plan(grid.load([LAB / name]), "inproc")
    assert len(plan.tasks) == tasks
    for task in plan.tasks:
        parse_task(task.params)  # raises TaskError naming a bad parameter


def test_poisoning_grid_attacks_what_it_says():
    plan = grid.plan(grid.load([LAB / "poisoning.yaml"]), "inproc")
    attackers = Counter()
    for task in plan.tasks:
        spec = attack_of(parse_task(task.params))
        ratio = task.params["poison_ratio"]
        if ratio == 0:
            assert spec is None  # the clean swarm of each merge method
            continue
        assert spec.kind == task.params["attack"]
        attackers[len(spec.malicious(8, task.params["seed"]))] += 1
    assert set(attackers) == {1, 2, 3}  # 1, 2 and 3 of the 8 nodes
