"""One node's training metrics, written as MODEL_DIR/metrics.json.

`MetricsRecorder` is what a training program (swarm node or local baseline) uses to
record its run: sample counts, per-epoch histories, the merged model's validation
metrics after each sync round, and, at `finish`, the final model's evaluation on the
validation set (accuracy, top-5, cross-entropy, per-class accuracy, confusion matrix).
`evaluate` computes the same numbers for any labels and scores. NumPy only.

The file is replaced atomically on every write, so a reader (`swarm report`) never sees
half a file, and holds strict JSON: NaN and infinities are written as null.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"
MODES = ("swarm", "local")
HISTORY_KEYS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_top5")
TOP_K = 5
# Probabilities of the true class are clipped to this before the log, so one confident
# mistake gives a large but finite loss (Keras clips at 1e-7 for the same reason).
LOG_EPSILON = 1e-7
# Rows of a probability matrix sum to 1 within float32 rounding of a softmax.
PROBABILITY_TOLERANCE = 1e-3


class MetricsError(ValueError):
    """Inputs that cannot be recorded: wrong shapes, unknown mode, out-of-order epochs..."""


# ---- evaluation -------------------------------------------------------------------------


def _labels(y: Any, name: str) -> np.ndarray:
    """`y` as a 1-D int64 label vector; one-hot rows become their argmax."""
    array = np.asarray(y)
    if array.ndim == 2:
        array = array.argmax(axis=1)
    if array.ndim != 1:
        raise MetricsError(f"{name} must be a vector of labels, got shape {array.shape}")
    if array.size and not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.number) or not np.all(array == np.round(array)):
            raise MetricsError(f"{name} must hold integer class labels, got {array.dtype}")
    labels = array.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise MetricsError(f"{name} holds a negative class label ({labels.min()})")
    return labels


def _scores(scores: Any, n: int) -> np.ndarray:
    """`scores` as an (n, classes) float64 matrix, checked against `n` labels."""
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] == 0:
        raise MetricsError(f"scores must be an (n, classes) matrix, got shape {array.shape}")
    if array.shape[0] != n:
        raise MetricsError(f"y_true has {n} labels but scores has {array.shape[0]} rows")
    return array


def is_probability(scores: np.ndarray) -> bool:
    """Whether every row is a probability distribution (so a cross-entropy means something)."""
    return bool(np.all(np.isfinite(scores)) and scores.min(initial=0.0) >= 0.0
                and np.allclose(scores.sum(axis=1), 1.0, atol=PROBABILITY_TOLERANCE))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float | None:
    """Fraction of labels predicted exactly; None for no samples."""
    return float(np.mean(y_true == y_pred)) if y_true.size else None


def top_k_accuracy(y_true: np.ndarray, scores: np.ndarray, k: int = TOP_K) -> float | None:
    """Fraction of samples whose true class is among the k highest scores.

    A true class counts when fewer than k classes score strictly higher, so ties never
    count against it; with k or fewer classes every sample counts."""
    if not y_true.size:
        return None
    true_scores = scores[np.arange(y_true.size), y_true]
    higher = (scores > true_scores[:, None]).sum(axis=1)
    return float(np.mean(higher < k))


def cross_entropy(y_true: np.ndarray, probabilities: np.ndarray) -> float | None:
    """Mean -log p(true class), p clipped at LOG_EPSILON; None for no samples."""
    if not y_true.size:
        return None
    p = probabilities[np.arange(y_true.size), y_true]
    return float(-np.mean(np.log(np.clip(p, LOG_EPSILON, 1.0))))


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): rows are true classes, columns predictions."""
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def evaluate(y_true: Any, scores: Any) -> dict[str, float | None]:
    """acc, top5 and loss of `scores` (n, classes) against labels `y_true` (n,).

    `scores` may be probabilities or logits (any scores whose argmax is the prediction);
    loss is the cross-entropy and only given (else None) when the rows are probabilities.
    """
    y = _labels(y_true, "y_true")
    s = _scores(scores, y.size)
    _check_label_range(y, s.shape[1], "y_true")
    return {"acc": accuracy(y, s.argmax(axis=1)),
            "top5": top_k_accuracy(y, s),
            "loss": cross_entropy(y, s) if is_probability(s) else None}


def _check_label_range(labels: np.ndarray, num_classes: int, name: str) -> None:
    if labels.size and labels.max() >= num_classes:
        raise MetricsError(f"{name} holds class {labels.max()} but there are only "
                           f"{num_classes} classes")


# ---- JSON -------------------------------------------------------------------------------


def to_json_value(value: Any) -> Any:
    """`value` with NumPy scalars/arrays as Python values and NaN/±inf as None."""
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, (list, tuple)):
        return [to_json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def _is_scalar(value: Any) -> bool:
    return not isinstance(value, (dict, list))


def format_json(value: Any, level: int = 0) -> str:
    """Strict JSON, indented but compact: lists of numbers (a history, a confusion row) and
    small flat objects (a round) on one line each."""
    pad, end = "  " * (level + 1), "\n" + "  " * level
    if isinstance(value, dict) and value and not (
            len(value) <= 5 and all(map(_is_scalar, value.values()))):
        items = [f"{pad}{json.dumps(k)}: {format_json(v, level + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + end + "}"
    if isinstance(value, list) and not all(map(_is_scalar, value)):
        return "[\n" + ",\n".join(pad + format_json(v, level + 1) for v in value) + end + "]"
    return json.dumps(value, allow_nan=False)


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> Path:
    """Writes `data` as strict JSON next to `path`, then renames it over `path`."""
    text = format_json(to_json_value(data))
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---- the recorder -----------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _metric(value: Any, name: str, *, fraction: bool = False) -> float | None:
    """`value` (a number, NumPy or 0-d tensor) as a float; NaN kept (written as null)."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise MetricsError(f"{name} must be a number, got {value!r}") from None
    if fraction and math.isfinite(number) and not 0.0 <= number <= 1.0:
        raise MetricsError(f"{name} is a fraction in [0, 1], got {number}")
    return number


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MetricsError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


class MetricsRecorder:
    """Collects one node's metrics during training and writes MODEL_DIR/metrics.json.

    Call `set_samples` once the data is split, `log_epoch` after every epoch,
    `log_round` after every merged model (e.g. from a SwarmCallback merge listener), and
    `finish` with the final model's validation labels and scores. `write` may be called
    at any time; until `finish`, the top-level train_/val_ fields are the last epoch's.
    `mode` is "swarm" for a swarm node and "local" for a baseline trained alone.
    """

    def __init__(self, model_dir: str | os.PathLike, *, node: str, mode: str, seed: int,
                 config: Mapping[str, Any], classes: Sequence[str] | None = None) -> None:
        if not isinstance(node, str) or not node:
            raise MetricsError(f"node must be a non-empty string, got {node!r}")
        if mode not in MODES:
            raise MetricsError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise MetricsError(f"seed must be an integer, got {seed!r}")
        if not isinstance(config, Mapping):
            raise MetricsError(f"config must be a dict, got {type(config).__name__}")
        try:  # fail now, not at the end of training
            json.dumps(to_json_value(config))
        except (TypeError, ValueError) as error:
            raise MetricsError(f"config is not JSON-serialisable: {error}") from None
        if classes is not None:
            classes = [str(c) for c in classes]
            if not classes or len(set(classes)) != len(classes):
                raise MetricsError("classes must be a non-empty list of distinct names")
        self.path = Path(model_dir) / METRICS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.node, self.mode, self.seed = node, mode, int(seed)
        self.config = dict(config)
        self.classes: list[str] | None = classes
        self.samples: dict[str, int | None] = {"train": None, "val": None}
        self.history: dict[str, list] = {"epoch": [], **{key: [] for key in HISTORY_KEYS}}
        self.rounds: list[dict[str, Any]] = []
        self.final: dict[str, Any] | None = None
        self.started_at = _now()
        self.finished_at: str | None = None
        self._start = time.monotonic()
        self.runtime_s: float | None = None

    def set_samples(self, train: int, val: int) -> None:
        """How many samples this node trains on and validates on."""
        self.samples = {"train": _count(train, "train"), "val": _count(val, "val")}

    def log_epoch(self, epoch: int, *, train_loss: Any, train_acc: Any, val_loss: Any = None,
                  val_acc: Any = None, val_top5: Any = None) -> None:
        """One epoch's metrics; epochs must increase (they need not start at 0 or 1)."""
        epoch = _count(epoch, "epoch")
        if self.history["epoch"] and epoch <= self.history["epoch"][-1]:
            raise MetricsError(f"epoch {epoch} logged after epoch {self.history['epoch'][-1]}")
        values = {"train_loss": _metric(train_loss, "train_loss"),
                  "train_acc": _metric(train_acc, "train_acc", fraction=True),
                  "val_loss": _metric(val_loss, "val_loss"),
                  "val_acc": _metric(val_acc, "val_acc", fraction=True),
                  "val_top5": _metric(val_top5, "val_top5", fraction=True)}
        self.history["epoch"].append(epoch)
        for key, value in values.items():
            self.history[key].append(value)

    def log_round(self, round_no: int, *, val_loss: Any, val_acc: Any,
                  val_top5: Any = None) -> None:
        """The merged model's validation metrics after sync round `round_no`."""
        round_no = _count(round_no, "round_no")
        if self.rounds and round_no <= self.rounds[-1]["round"]:
            raise MetricsError(f"round {round_no} logged after round {self.rounds[-1]['round']}")
        self.rounds.append({"round": round_no,
                            "val_loss": _metric(val_loss, "val_loss"),
                            "val_acc": _metric(val_acc, "val_acc", fraction=True),
                            "val_top5": _metric(val_top5, "val_top5", fraction=True)})

    def finish(self, *, y_true: Any, y_score_or_pred: Any, train_loss: Any = None,
               train_acc: Any = None, confusion: bool = True, val_loss: Any = None) -> Path:
        """Evaluates the final model on the validation set and writes metrics.json.

        `y_score_or_pred` is (n, classes) scores (probabilities or logits) or (n,)
        predicted labels. val_top5 needs scores and val_loss probabilities; give
        `val_loss` when computed elsewhere (e.g. from logits). train_loss/train_acc
        default to the last epoch's.
        """
        y = _labels(y_true, "y_true")
        predictions = np.asarray(y_score_or_pred)
        scores = _scores(predictions, y.size) if predictions.ndim == 2 else None
        if scores is not None:
            y_pred, num_classes = scores.argmax(axis=1), scores.shape[1]
        else:
            y_pred = _labels(predictions, "y_score_or_pred")
            if y_pred.size != y.size:
                raise MetricsError(f"y_true has {y.size} labels but y_score_or_pred has "
                                   f"{y_pred.size} predictions")
            num_classes = len(self.classes) if self.classes else int(
                max(y.max(initial=0), y_pred.max(initial=0)) + 1)
        if self.classes is not None and len(self.classes) != num_classes:
            raise MetricsError(f"{len(self.classes)} classes named but scores have "
                               f"{num_classes} columns")
        _check_label_range(y, num_classes, "y_true")
        _check_label_range(y_pred, num_classes, "y_score_or_pred")
        top5 = top_k_accuracy(y, scores) if scores is not None else None
        if val_loss is not None:
            loss = _metric(val_loss, "val_loss")
        else:
            loss = cross_entropy(y, scores) if scores is not None and is_probability(scores) else None
        matrix = confusion_matrix(y, y_pred, num_classes)
        support = matrix.sum(axis=1)
        names = self.classes or [str(i) for i in range(num_classes)]
        self.final = {
            "train_loss": _metric(train_loss, "train_loss") if train_loss is not None
            else self._last("train_loss"),
            "train_acc": _metric(train_acc, "train_acc", fraction=True) if train_acc is not None
            else self._last("train_acc"),
            "val_acc": accuracy(y, y_pred), "val_top5": top5, "val_loss": loss,
            "per_class_accuracy": {name: (float(matrix[i, i] / support[i]) if support[i] else None)
                                   for i, name in enumerate(names)},
            "per_class_support": dict(zip(names, support.tolist())),
            "confusion_matrix": matrix.tolist() if confusion else None,
            "classes": names,
        }
        if self.samples["val"] is None:
            self.samples["val"] = int(y.size)
        self.runtime_s = time.monotonic() - self._start
        self.finished_at = _now()
        return self.write()

    def _last(self, key: str) -> float | None:
        return self.history[key][-1] if self.history[key] else None

    def as_dict(self) -> dict[str, Any]:
        """The metrics.json content as it stands."""
        final = self.final or {
            **{key: self._last(key) for key in HISTORY_KEYS},
            "per_class_accuracy": None, "per_class_support": None,
            "confusion_matrix": None, "classes": self.classes}
        return {
            "schema_version": SCHEMA_VERSION,
            "node": self.node, "mode": self.mode, "seed": self.seed, "config": self.config,
            "samples": self.samples,
            **{key: final[key] for key in ("train_acc", "val_acc", "val_top5",
                                           "train_loss", "val_loss")},
            "history": self.history, "rounds": self.rounds,
            "per_class_accuracy": final["per_class_accuracy"],
            "per_class_support": final["per_class_support"],
            "confusion_matrix": final["confusion_matrix"], "classes": final["classes"],
            "runtime_s": (self.runtime_s if self.runtime_s is not None
                          else time.monotonic() - self._start),
            "started_at": self.started_at, "finished_at": self.finished_at,
        }

    def write(self) -> Path:
        """Writes metrics.json atomically (temporary file, then rename); returns its path."""
        return write_json_atomic(self.path, self.as_dict())
