"""Experiment files expand to grids; a task's signature names its parameters, not where it
was listed, so a task in several experiments or files runs once."""

from __future__ import annotations

import pytest

from swarm.lab import grid
from swarm.lab.grid import GridError


def write(path, text: str):
    path.write_text(text)
    return path


def test_lists_multiply_constants_and_wrapped_lists_do_not(tmp_path):
    config = write(tmp_path / "a.yaml", """
experiments:
  - name: grid
    task: lab_tasks:ok
    params:
      seed: [0, 1, 2]
      merge: [mean, trimmedmean]
      hidden: [[64, 32]]
      nodes: 4
      extra: {lr: 0.01}
""")
    [experiment] = grid.load([config])
    tasks = grid.expand(experiment, "inproc")
    assert len(tasks) == 6
    assert [(t.params["seed"], t.params["merge"]) for t in tasks] == [
        (0, "mean"), (0, "trimmedmean"), (1, "mean"), (1, "trimmedmean"),
        (2, "mean"), (2, "trimmedmean")]
    assert all(t.params["hidden"] == [64, 32] and t.params["nodes"] == 4
               and t.params["extra"] == {"lr": 0.01} for t in tasks)
    assert len({t.signature for t in tasks}) == 6


def test_defaults_apply_to_every_experiment_and_experiments_override_them(tmp_path):
    config = write(tmp_path / "a.yaml", """
defaults:
  task: lab_tasks:ok
  params: {nodes: 4, rounds: 10}
experiments:
  - name: one
    params: {seed: [0, 1]}
  - name: two
    task: lab_tasks:flaky
    params: {seed: 0, nodes: 8}
""")
    one, two = grid.load([config])
    assert one.task == "lab_tasks:ok" and two.task == "lab_tasks:flaky"
    assert [t.params for t in grid.expand(one, "inproc")] == [
        {"nodes": 4, "rounds": 10, "seed": 0}, {"nodes": 4, "rounds": 10, "seed": 1}]
    assert [t.params for t in grid.expand(two, "inproc")] == [
        {"nodes": 8, "rounds": 10, "seed": 0}]


def test_a_task_in_several_files_is_planned_once_and_listed_by_each(tmp_path):
    first = write(tmp_path / "first.yaml", """
experiments:
  - name: poison
    task: lab_tasks:ok
    params: {seed: [0, 1], poison_ratio: [0.0, 0.25], merge: mean}
""")
    # the same cells written differently: other key order, 0 for 0.0, one extra cell
    second = write(tmp_path / "second.yaml", """
experiments:
  - name: clean
    task: lab_tasks:ok
    params: {merge: mean, poison_ratio: 0, seed: [1, 0, 2]}
""")
    experiments = grid.load([first, second])
    plan = grid.plan(experiments, "inproc")
    assert len(plan.tasks) == 5  # 4 + 3 cells, 2 of them shared
    shared = set(plan.members["poison"]) & set(plan.members["clean"])
    assert len(shared) == 2
    assert {t.params["seed"] for t in plan.tasks if t.signature in shared} == {0, 1}


def test_the_seed_the_backend_and_the_task_are_part_of_the_signature():
    params = {"seed": 0, "alpha": 0.3, "merge": "mean"}
    base = grid.signature("m:f", "inproc", params)
    assert grid.signature("m:f", "inproc", {**params, "seed": 1}) != base
    assert grid.signature("m:f", "process", params) != base
    assert grid.signature("m:g", "inproc", params) != base
    # one spelling per value: key order, 1.0 against 1, a float's shortest form
    assert grid.signature("m:f", "inproc", {"merge": "mean", "alpha": 0.3, "seed": 0.0}) == base
    assert grid.signature("m:f", "inproc", {**params, "alpha": 0.1 + 0.2}) != base
    assert len(base) == 64


def test_exponent_numbers_are_floats(tmp_path):
    config = write(tmp_path / "a.yaml", """
experiments:
  - name: lr
    task: lab_tasks:ok
    params: {lr: [1e-3, 3.0e-4, 1E2]}
""")
    [experiment] = grid.load([config])
    assert experiment.axes["lr"] == [0.001, 0.0003, 100]


@pytest.mark.parametrize("text, where", [
    ("seeds: [0]\n", "unknown key(s) seeds"),
    ("experiments: []\n", "'experiments' must be a non-empty list"),
    ("experiments:\n  - name: a b\n    params: {}\n", "experiments[0].name"),
    ("experiments:\n  - name: x\n    param: {seed: 1}\n", "experiments[0]: unknown key(s) param"),
    ("experiments:\n  - name: x\n    params: {seed: []}\n", "experiment 'x'.params.seed: an empty"),
    ("experiments:\n  - name: x\n    params: {seed: [1, 1.0]}\n", "params.seed: value 1.0 is listed twice"),
    ("experiments:\n  - name: x\n    task: nocolon\n", "experiment 'x'.task: 'nocolon'"),
    ("experiments:\n  - name: x\n    params: {a: .nan}\n", "params.a: nan is not a finite number"),
    ("experiments: [\n", "not valid YAML"),
])
def test_bad_files_are_refused_naming_the_file_and_the_key(tmp_path, text, where):
    config = write(tmp_path / "bad.yaml", text)
    with pytest.raises(GridError) as error:
        grid.load([config])
    assert str(config) in str(error.value)
    assert where in str(error.value)


def test_an_experiment_name_used_in_two_files_is_an_error_naming_both(tmp_path):
    text = "experiments:\n  - name: same\n    task: lab_tasks:ok\n    params: {seed: 0}\n"
    first, second = write(tmp_path / "1.yaml", text), write(tmp_path / "2.yaml", text)
    with pytest.raises(GridError, match="experiment 'same' is also defined in") as error:
        grid.load([first, second])
    assert str(first) in str(error.value) and str(second) in str(error.value)


def test_values_sort_as_numbers_then_naturally():
    assert sorted([10, 0.1, 1, 0.3], key=grid.sort_key) == [0.1, 0.3, 1, 10]
    assert sorted(["10", "0.3", "1"], key=grid.sort_key) == ["0.3", "1", "10"]
    assert sorted(["node10", "node2", None], key=grid.sort_key) == [None, "node2", "node10"]


def test_values_keep_their_type_for_the_task_while_the_signature_normalises(tmp_path):
    config = write(tmp_path / "a.yaml", """
experiments:
  - name: a
    task: lab_tasks:ok
    params: {poison_ratio: [0.0, 0.5], nodes: 4}
""")
    [experiment] = grid.load([config])
    first = grid.expand(experiment, "inproc")[0]
    assert first.params == {"poison_ratio": 0.0, "nodes": 4}
    assert isinstance(first.params["poison_ratio"], float)
    assert first.signature == grid.signature("lab_tasks:ok", "inproc",
                                             {"poison_ratio": 0, "nodes": 4.0})
