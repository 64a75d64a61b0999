"""`swarm report` on results trees of metrics.json files written by MetricsRecorder."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fake_results import write_node, write_tree
from swarm.report import cli
from swarm.report.collect import collect
from swarm.report.plots import MAX_TICK_LABELS, confusion_figure

PNG = b"\x89PNG\r\n\x1a\n"
PLOTS = ["accuracy_curves.png", "loss_curves.png", "val_acc_per_node.png", "swarm_vs_local.png",
         "val_acc_histogram.png", "train_vs_val_acc.png", "merged_val_acc_per_round.png"]


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two runs of three swarm nodes and their three local baselines, reported once."""
    root = tmp_path_factory.mktemp("results")
    write_tree(root, runs=2, nodes=3, classes=10, epochs=6, rounds=5)
    out = tmp_path_factory.mktemp("report")
    printed = io.StringIO()  # capsys is per test; this fixture runs once per module
    with contextlib.redirect_stdout(printed):
        assert cli.main(["--results-root", str(root), "--out-dir", str(out)]) == 0
    return root, out, printed.getvalue()


def metrics_files(root: Path) -> list[dict]:
    return [json.loads(p.read_text()) | {"_run": p.parent.parent.name}
            for p in sorted(root.rglob("metrics.json"))]


def test_report_writes_every_output(report):
    _, out, printed = report
    for name in ["summary.json", "per_class_accuracy.csv", *PLOTS]:
        assert (out / name).is_file(), name
        assert name in printed, f"{name} missing from the printed table"
    heatmaps = sorted(p.name for p in (out / "confusion").iterdir())
    assert heatmaps == [f"confusion_{mode}_node{i}.png" for mode in ("local", "swarm")
                        for i in (1, 2, 3)]
    for png in [*(out / name for name in PLOTS), *(out / "confusion").iterdir()]:
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000, png


def test_summary_mean_and_std_are_right(report):
    root, out, _ = report
    summary = json.loads((out / "summary.json").read_text())
    files = metrics_files(root)
    assert len(summary["node_runs"]) == len(files) == 12

    def check(entry: dict, members: list[dict]) -> None:
        for metric in ("val_acc", "train_acc", "val_loss", "val_top5"):
            values = np.array([m[metric] for m in members])
            assert entry[metric]["n"] == len(members)
            assert entry[metric]["mean"] == pytest.approx(values.mean())
            assert entry[metric]["std"] == pytest.approx(values.std(ddof=1))
            assert (entry[metric]["min"], entry[metric]["max"]) == (values.min(), values.max())

    per_node = {(e["node"], e["mode"]): e for e in summary["per_node"]}
    assert len(per_node) == 6
    for (node, mode), entry in per_node.items():
        members = [m for m in files if (m["node"], m["mode"]) == (node, mode)]
        assert entry["runs"] == ["run1", "run2"] and entry["n"] == 2
        check(entry, members)
    per_run = {(e["run"], e["mode"]): e for e in summary["per_run"]}
    assert sorted(per_run) == [(r, m) for r in ("run1", "run2") for m in ("local", "swarm")]
    for (run, mode), entry in per_run.items():
        assert entry["nodes"] == ["node1", "node2", "node3"]
        check(entry, [m for m in files if (m["_run"], m["mode"]) == (run, mode)])
    for entry in summary["per_mode"]:
        check(entry, [m for m in files if m["mode"] == entry["mode"]])
    swarm, local = (next(e for e in summary["per_mode"] if e["mode"] == m) for m in ("swarm", "local"))
    assert swarm["val_acc"]["mean"] > local["val_acc"]["mean"]  # as the fake results were made


def test_per_class_csv_has_every_class_of_every_node_run(report):
    root, out, _ = report
    with (out / "per_class_accuracy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["run", "node", "mode", "class", "accuracy", "support"]
    assert len(rows) == 12 * 10
    run1_node2 = json.loads((root / "run1" / "node2" / "metrics.json").read_text())
    mine = {r["class"]: r for r in rows if (r["run"], r["node"], r["mode"]) == ("run1", "node2", "swarm")}
    for name, acc in run1_node2["per_class_accuracy"].items():
        assert float(mine[name]["accuracy"]) == pytest.approx(acc, rel=1e-5)
        assert int(mine[name]["support"]) == run1_node2["per_class_support"][name]


def test_a_run_is_the_directory_of_node_directories_or_the_config_run(tmp_path):
    write_node(tmp_path / "exp" / "seed1" / "a", node="a", mode="swarm", seed=1, classes=3,
               epochs=2, rounds=0, plateau=0.8)
    write_node(tmp_path / "b", node="b", mode="swarm", seed=2, classes=3, epochs=2, rounds=0,
               plateau=0.8)
    write_node(tmp_path / "x" / "c", node="c", mode="local", seed=3, classes=3, epochs=2,
               rounds=0, plateau=0.8, run="named")
    runs = {r.node: r.run for r in collect(tmp_path)}
    assert runs == {"a": "exp/seed1", "b": tmp_path.name, "c": "named"}


def test_unreadable_metrics_are_skipped_with_a_one_line_warning(tmp_path, capsys):
    good = write_node(tmp_path / "r" / "good", node="good", mode="swarm", seed=1, classes=3,
                      epochs=2, rounds=0, plateau=0.8)
    broken = tmp_path / "r" / "broken" / "metrics.json"
    broken.parent.mkdir()
    broken.write_text('{"node": "broken", ')
    alien = tmp_path / "r" / "alien" / "metrics.json"
    alien.parent.mkdir()
    alien.write_text(json.dumps({"accuracy": 0.9}))
    assert [r.path for r in collect(tmp_path)] == [good]
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 2
    assert warnings[0].startswith(f"warning: skipping {alien}: schema_version")
    assert warnings[1].startswith(f"warning: skipping {broken}: ")


def test_min_epochs_drops_short_runs_and_says_which(tmp_path, capsys):
    root, out = tmp_path / "results", tmp_path / "out"
    for i, epochs in enumerate([5, 5, 2], start=1):
        write_node(root / "run1" / f"node{i}", node=f"node{i}", mode="swarm", seed=i,
                   classes=4, epochs=epochs, rounds=3, plateau=0.7)
    assert cli.main(["--results-root", str(root), "--out-dir", str(out), "--min-epochs", "3"]) == 0
    err = capsys.readouterr().err
    assert f"dropped {root / 'run1' / 'node3' / 'metrics.json'}: 2 epochs < --min-epochs 3" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["min_epochs"] == 3
    assert [e["node"] for e in summary["node_runs"]] == ["node1", "node2"]

    assert cli.main(["--results-root", str(root), "--out-dir", str(out), "--min-epochs", "9"]) == 1
    assert "every run has fewer than 9 epochs" in capsys.readouterr().err


@pytest.mark.parametrize("make_root, message", [
    (lambda p: p, "no metrics.json found under"),
    (lambda p: p / "missing", "is not a directory"),
])
def test_a_root_without_metrics_is_a_clear_error(tmp_path, capsys, make_root, message):
    root = make_root(tmp_path)
    assert cli.main(["--results-root", str(root), "--out-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("swarm report: error: ") and message in err and str(root) in err
    assert not (tmp_path / "out").exists()


def test_help_names_the_umbrella_command(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--help"])
    assert stopped.value.code == 0
    assert capsys.readouterr().out.startswith("usage: swarm report")


def test_the_umbrella_swarm_report_command(tmp_path):
    """`swarm report` through the installed entry point; a swarm without local baselines
    skips the comparison plot and says so."""
    root, out = tmp_path / "results", tmp_path / "out"
    write_tree(root, runs=1, nodes=2, classes=3, epochs=3, rounds=2, local=False)
    swarm = Path(sys.executable).parent / "swarm"
    done = subprocess.run([str(swarm), "report", "--results-root", str(root), "--out-dir", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "skipped: no local runs" in done.stdout
    assert not (out / "swarm_vs_local.png").exists()
    assert (out / "summary.json").is_file() and (out / "merged_val_acc_per_round.png").is_file()


@pytest.mark.parametrize("classes", [10, 100])
def test_confusion_heatmap_stays_readable(classes):
    """Cell values and every class name for few classes; neither for 100."""
    rng = np.random.default_rng(0)
    matrix = rng.integers(0, 5, (classes, classes)) + np.diag(np.full(classes, 40))
    fig = confusion_figure(matrix, [f"class_{i}" for i in range(classes)], "t")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    if classes == 10:
        assert len(ax.texts) == int(np.count_nonzero(matrix)) and len(labels) == 10
    else:
        assert not ax.texts and len(labels) <= MAX_TICK_LABELS
        assert labels[:2] == ["class_0", "class_4"]
