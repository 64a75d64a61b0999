"""results.csv (one row per task, for the folder and per experiment), `swarm sweep status`,
and `swarm sweep report`'s summary and plots: only those for what the grid varies, numbers
in numeric order."""

from __future__ import annotations

import csv

import pytest
from matplotlib.image import imread

from swarm.lab.cli import main

CONFIG = """
defaults:
  task: lab_tasks:ok
  params: {{markers: {markers}, key: r, nodes: 3}}
experiments:
  - name: poison
    params:
      seed: [0, 1]
      poison_ratio: [0.5, 0, 0.25]
      merge: [mean, trimmedmean]
      alpha: 1
  - name: alpha
    params:
      seed: [0, 1]
      alpha: [10, 0.1, 1, 0.3]
      poison_ratio: 0.0
      merge: mean
  - name: seeds-only
    params:
      seed: [0, 1]
      alpha: 2
"""


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("report")
    config = folder / "lab.yaml"
    config.write_text(CONFIG.format(markers=folder / "markers"))
    out = folder / "out"
    assert main([str(config), "--out", str(out), "--workers", "2", "--report"]) == 0
    return out


def read_csv(path):
    with open(path) as handle:
        return list(csv.DictReader(handle))


def test_results_csv_has_a_row_per_task_with_every_parameter_and_metric(swept):
    rows = read_csv(swept / "results.csv")
    assert len(rows) == 12 + 8 + 2 - 2  # two tasks are in both poison and alpha
    for column in ("signature", "state", "seed", "alpha", "poison_ratio", "merge",
                   "accuracy", "loss", "local_accuracy", "local_accuracy_mean", "rounds"):
        assert column in rows[0], column
    assert all(row["state"] == "done" and row["attempts"] == "1" for row in rows)
    shared = [row for row in rows if row["experiments"] == "alpha;poison"]
    assert {(row["seed"], row["alpha"], row["poison_ratio"]) for row in shared} == {
        ("0", "1", "0"), ("1", "1", "0")}
    per_experiment = {name: read_csv(swept / "experiments" / name / "results.csv")
                      for name in ("poison", "alpha", "seeds-only")}
    assert [len(v) for v in per_experiment.values()] == [12, 8, 2]
    assert {row["signature"] for row in shared} <= {
        row["signature"] for row in per_experiment["poison"]} & {
        row["signature"] for row in per_experiment["alpha"]}
    # numeric order, not text order and not the order the file listed them in
    alphas = [row["alpha"] for row in per_experiment["alpha"] if row["seed"] == "0"]
    assert alphas == ["0.1", "0.3", "1", "10"]


def test_the_report_plots_only_what_the_grid_varies(swept):
    report = swept / "report"
    assert sorted(p.name for p in (report / "poison").glob("*.png")) == [
        "accuracy_vs_poison_ratio.png", "swarm_vs_local.png"]
    assert sorted(p.name for p in (report / "alpha").glob("*.png")) == [
        "accuracy_vs_alpha.png", "swarm_vs_local.png"]
    assert not list((report / "seeds-only").glob("accuracy_*.png"))
    image = imread(report / "poison" / "accuracy_vs_poison_ratio.png")
    assert image.shape[0] > 200 and image.shape[1] > 300


def test_the_summary_groups_over_seeds_in_numeric_order(swept):
    text = (swept / "report" / "summary.md").read_text()
    alpha = text.split("## alpha")[1].split("## ")[0]
    rows = [line.split("|")[1].strip() for line in alpha.splitlines()
            if line.startswith("| ") and not line.startswith("| alpha")]
    assert rows == ["0.1", "0.3", "1", "10"]
    poison = text.split("## poison")[1].split("## ")[0]
    # mean ± std over the two seeds of each (merge, poison_ratio) cell
    assert "| mean | 0.5 | 2 | 0 | 0 | 0.5275 ± 0.0035 |" in poison
    assert "![accuracy_vs_poison_ratio](poison/accuracy_vs_poison_ratio.png)" in poison


def test_status_tells_each_experiment_s_counts(swept, capsys):
    assert main(["status", str(swept)]) == 0
    out = capsys.readouterr().out
    assert "poison" in out and "seeds-only" in out and "all (distinct)" in out


def test_status_and_report_of_a_folder_with_no_sweep_fail_clearly(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "no sweep here" in capsys.readouterr().err


def test_a_bad_config_exits_2_naming_the_file(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("experiments:\n  - name: x\n    task: nowhere_module:run\n")
    assert main([str(config), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "'nowhere_module:run' does not load" in err


def test_a_small_real_grid_writes_results_and_plots(tmp_path):
    """The default task, swarm.lab.tasks:run_task (digits, a small MLP, N simulated nodes)."""
    pytest.importorskip("swarm.lab.tasks", reason="the lab's tasks are not in this tree")
    config = tmp_path / "real.yaml"
    config.write_text("""
defaults:
  params: {nodes: 3, epochs: 1, local_baseline: true, attack: labelflip}
experiments:
  - name: labelflip
    params: {seed: [0, 1], poison_ratio: [0.0, 0.34]}
""")
    out = tmp_path / "out"
    assert main([str(config), "--out", str(out), "--workers", "2", "--report"]) == 0
    rows = read_csv(out / "results.csv")
    assert len(rows) == 4
    assert all(row["state"] == "done" and 0.0 <= float(row["accuracy"]) <= 1.0
               and row["task"] == "swarm.lab.tasks:run_task" for row in rows)
    assert all(len(row["weights_sha256"]) == 64 for row in rows)
    plots = sorted(p.name for p in (out / "report" / "labelflip").glob("*.png"))
    assert plots == ["accuracy_vs_poison_ratio.png", "swarm_vs_local.png"]
