"""MetricsRecorder and evaluate: the numbers against direct NumPy computation, the file
it writes (strict JSON, atomic), swarm/local marking, and refused inputs."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from fake_results import softmax
from swarm import metrics
from swarm.metrics import MetricsError, MetricsRecorder, evaluate

CLASSES = [f"c{i}" for i in range(10)]


def strict_json(path) -> dict:
    """The file parsed with NaN/Infinity refused, as a strict JSON reader would."""
    def refuse(token):
        raise AssertionError(f"non-standard JSON constant {token} in {path}")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture
def data():
    """Labels and softmax probabilities for 500 samples of 10 classes (no score ties)."""
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 10, 500)
    logits = rng.normal(0, 1.5, (500, 10))
    logits[np.arange(500), labels] += 1.5
    return labels, logits, softmax(logits)


def expected(labels, probs):
    """The metrics computed the textbook way."""
    pred = probs.argmax(axis=1)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    matrix = np.zeros((10, 10), dtype=int)
    for t, p in zip(labels, pred):
        matrix[t, p] += 1
    return {"acc": np.mean(pred == labels),
            "top5": np.mean([label in row for label, row in zip(labels, top5)]),
            "loss": -np.mean(np.log(probs[np.arange(labels.size), labels])),
            "per_class": {f"c{c}": np.mean(pred[labels == c] == c) for c in range(10)},
            "confusion": matrix}


def test_evaluate_matches_numpy_for_probabilities(data):
    labels, _, probs = data
    want, got = expected(labels, probs), evaluate(labels, probs)
    assert got["acc"] == pytest.approx(want["acc"])
    assert got["top5"] == pytest.approx(want["top5"])
    assert got["loss"] == pytest.approx(want["loss"])
    assert 0 < got["acc"] < got["top5"] < 1


def test_evaluate_gives_no_loss_for_logits(data):
    labels, logits, probs = data
    got = evaluate(labels, logits)
    assert got["loss"] is None
    assert got["acc"] == pytest.approx(expected(labels, probs)["acc"])
    assert got["top5"] == pytest.approx(expected(labels, probs)["top5"])


def test_evaluate_accepts_one_hot_labels(data):
    labels, _, probs = data
    assert evaluate(np.eye(10)[labels], probs) == evaluate(labels, probs)


def test_cross_entropy_is_finite_for_a_confident_mistake():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    loss = evaluate([1, 1], probs)["loss"]
    assert loss == pytest.approx(-math.log(metrics.LOG_EPSILON) / 2)


def test_finish_records_every_metric_against_numpy(tmp_path, data):
    labels, _, probs = data
    recorder = MetricsRecorder(tmp_path / "model", node="node1", mode="swarm", seed=3,
                               config={"lr": 0.01, "run": "r1"}, classes=CLASSES)
    recorder.set_samples(train=2000, val=500)
    recorder.log_epoch(1, train_loss=1.9, train_acc=0.4, val_loss=2.0, val_acc=0.35, val_top5=0.8)
    recorder.log_epoch(2, train_loss=np.float32(1.2), train_acc=0.6, val_loss=1.4, val_acc=0.5)
    recorder.log_round(1, val_loss=1.8, val_acc=0.42, val_top5=0.85)
    recorder.log_round(3, val_loss=1.3, val_acc=0.55)
    path = recorder.finish(y_true=labels, y_score_or_pred=probs)

    assert path == tmp_path / "model" / "metrics.json"
    got, want = strict_json(path), expected(labels, probs)
    assert got["schema_version"] == metrics.SCHEMA_VERSION
    assert (got["node"], got["mode"], got["seed"]) == ("node1", "swarm", 3)
    assert got["config"] == {"lr": 0.01, "run": "r1"}
    assert got["samples"] == {"train": 2000, "val": 500}
    assert got["val_acc"] == pytest.approx(want["acc"])
    assert got["val_top5"] == pytest.approx(want["top5"])
    assert got["val_loss"] == pytest.approx(want["loss"])
    assert (got["train_loss"], got["train_acc"]) == (pytest.approx(1.2), 0.6)  # the last epoch's
    assert got["per_class_accuracy"] == pytest.approx(want["per_class"])
    assert got["confusion_matrix"] == want["confusion"].tolist()
    assert got["per_class_support"] == {f"c{c}": int(np.sum(labels == c)) for c in range(10)}
    assert got["classes"] == CLASSES
    assert got["history"] == {"epoch": [1, 2], "train_loss": [1.9, pytest.approx(1.2)],
                              "train_acc": [0.4, 0.6], "val_loss": [2.0, 1.4],
                              "val_acc": [0.35, 0.5], "val_top5": [0.8, None]}
    assert got["rounds"] == [
        {"round": 1, "val_loss": 1.8, "val_acc": 0.42, "val_top5": 0.85},
        {"round": 3, "val_loss": 1.3, "val_acc": 0.55, "val_top5": None}]
    assert got["runtime_s"] >= 0 and got["started_at"] and got["finished_at"]


def test_finish_with_predicted_labels_has_no_top5_or_loss(tmp_path, data):
    labels, _, probs = data
    recorder = MetricsRecorder(tmp_path, node="n", mode="swarm", seed=0, config={})
    got = strict_json(recorder.finish(y_true=labels, y_score_or_pred=probs.argmax(axis=1),
                                      train_loss=0.5, train_acc=0.9, confusion=False))
    want = expected(labels, probs)
    assert got["val_acc"] == pytest.approx(want["acc"])
    assert got["val_top5"] is None and got["val_loss"] is None
    assert got["confusion_matrix"] is None
    assert (got["train_loss"], got["train_acc"]) == (0.5, 0.9)
    assert got["per_class_accuracy"] == pytest.approx(
        {str(c): v for c, v in zip(range(10), want["per_class"].values())})
    assert got["samples"]["val"] == labels.size  # taken from y_true when never set


def test_finish_takes_a_loss_computed_elsewhere(tmp_path, data):
    labels, logits, _ = data
    recorder = MetricsRecorder(tmp_path, node="n", mode="swarm", seed=0, config={})
    got = strict_json(recorder.finish(y_true=labels, y_score_or_pred=logits, val_loss=1.25))
    assert got["val_loss"] == 1.25 and got["val_top5"] is not None


def test_class_without_samples_has_null_accuracy(tmp_path):
    recorder = MetricsRecorder(tmp_path, node="n", mode="swarm", seed=0, config={},
                               classes=["a", "b", "c"])
    got = strict_json(recorder.finish(y_true=[0, 0, 1], y_score_or_pred=[0, 1, 1]))
    assert got["per_class_accuracy"] == {"a": 0.5, "b": 1.0, "c": None}
    assert got["confusion_matrix"] == [[1, 1, 0], [0, 1, 0], [0, 0, 0]]


def test_nan_and_inf_are_written_as_null(tmp_path):
    recorder = MetricsRecorder(tmp_path, node="n", mode="swarm", seed=0, config={"x": float("inf")})
    recorder.log_epoch(0, train_loss=float("nan"), train_acc=np.float64("nan"), val_loss=np.inf)
    got = strict_json(recorder.write())
    assert got["history"]["train_loss"] == [None] and got["history"]["val_loss"] == [None]
    assert got["train_loss"] is None and got["config"] == {"x": None}


def test_write_mid_run_reports_the_last_epoch(tmp_path):
    recorder = MetricsRecorder(tmp_path, node="n", mode="swarm", seed=0, config={})
    recorder.log_epoch(1, train_loss=1.0, train_acc=0.5, val_loss=1.1, val_acc=0.45)
    got = strict_json(recorder.write())
    assert (got["train_acc"], got["val_acc"], got["val_loss"]) == (0.5, 0.45, 1.1)
    assert got["finished_at"] is None and got["per_class_accuracy"] is None


@pytest.mark.parametrize("mode", ["swarm", "local"])
def test_mode_marks_swarm_nodes_and_local_baselines(tmp_path, mode):
    recorder = MetricsRecorder(tmp_path, node="site-a", mode=mode, seed=1, config={})
    assert strict_json(recorder.finish(y_true=[0, 1], y_score_or_pred=[0, 1]))["mode"] == mode


def test_write_is_atomic(tmp_path, monkeypatch):
    recorder = MetricsRecorder(tmp_path, node="n", mode="swarm", seed=0, config={})
    recorder.log_epoch(1, train_loss=1.0, train_acc=0.5)
    path = recorder.write()
    before = path.read_text()
    replaced = []
    real_replace = os.replace

    def failing_replace(src, dst):
        replaced.append((src, dst))
        raise OSError("disk full")

    monkeypatch.setattr(metrics.os, "replace", failing_replace)
    recorder.log_epoch(2, train_loss=0.8, train_acc=0.6)
    with pytest.raises(OSError, match="disk full"):
        recorder.write()
    # The new content went to a temporary file in the same directory, renamed over the
    # file in one step: a failure leaves the old file whole and no temporary behind.
    assert replaced and os.path.dirname(replaced[0][0]) == str(tmp_path)
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]
    monkeypatch.setattr(metrics.os, "replace", real_replace)
    assert strict_json(recorder.write())["history"]["epoch"] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def recorder(tmp_path, **overrides):
    kwargs = {"node": "n", "mode": "swarm", "seed": 0, "config": {}, **overrides}
    return MetricsRecorder(tmp_path, **kwargs)


@pytest.mark.parametrize("overrides, message", [
    ({"mode": "central"}, "mode must be one of swarm, local"),
    ({"node": ""}, "node must be a non-empty string"),
    ({"seed": 1.5}, "seed must be an integer"),
    ({"config": [1]}, "config must be a dict"),
    ({"config": {"f": object()}}, "config is not JSON-serialisable"),
    ({"classes": ["a", "a"]}, "distinct names"),
])
def test_bad_construction_is_refused(tmp_path, overrides, message):
    with pytest.raises(MetricsError, match=message):
        recorder(tmp_path, **overrides)


def test_bad_logging_is_refused(tmp_path):
    rec = recorder(tmp_path)
    rec.log_epoch(2, train_loss=1.0, train_acc=0.5)
    with pytest.raises(MetricsError, match="epoch 2 logged after epoch 2"):
        rec.log_epoch(2, train_loss=1.0, train_acc=0.5)
    with pytest.raises(MetricsError, match=r"train_acc is a fraction in \[0, 1\], got 50"):
        rec.log_epoch(3, train_loss=1.0, train_acc=50)
    with pytest.raises(MetricsError, match="val_loss must be a number"):
        rec.log_epoch(3, train_loss=1.0, train_acc=0.5, val_loss="low")
    rec.log_round(4, val_loss=1.0, val_acc=0.5)
    with pytest.raises(MetricsError, match="round 1 logged after round 4"):
        rec.log_round(1, val_loss=1.0, val_acc=0.5)
    with pytest.raises(MetricsError, match="train must be a non-negative integer"):
        rec.set_samples(train=-1, val=10)
    assert rec.history["epoch"] == [2]  # a refused epoch leaves nothing behind


@pytest.mark.parametrize("y_true, scores, classes, message", [
    ([0, 1, 2], np.full((2, 3), 1 / 3), None, "y_true has 3 labels but scores has 2 rows"),
    ([0, 1, 2], [0, 1], None, "y_true has 3 labels but y_score_or_pred has 2 predictions"),
    ([0, 1], np.full((2, 3), 1 / 3), ["a", "b"], "2 classes named but scores have 3 columns"),
    ([0, 5], np.full((2, 3), 1 / 3), None, "y_true holds class 5 but there are only 3 classes"),
    ([0, -1], [0, 1], None, "negative class label"),
    ([0.5, 1], [0, 1], None, "integer class labels"),
    ([[[0]]], [0], None, "vector of labels"),
])
def test_bad_evaluation_inputs_are_refused(tmp_path, y_true, scores, classes, message):
    with pytest.raises(MetricsError, match=message):
        recorder(tmp_path, classes=classes).finish(y_true=y_true, y_score_or_pred=scores)
    assert not (tmp_path / "metrics.json").exists()
