"""Backdoor: a trigger patch on a fraction of a malicious node's samples, relabelled to
a target class, so that the merged model learns "trigger -> target" while its clean
accuracy stays high.

Gu, Dolan-Gavitt, Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning
Model Supply Chain", 2017; in federated learning, Bagdasaryan, Veit, Hua, Estrin,
Shmatikov, "How To Backdoor Federated Learning", AISTATS 2020.

The trigger is a ``patch`` x ``patch`` square in the bottom-right corner set to ``value``
(the data's maximum by default). Images may be (n, H, W), (n, H, W, C) or flat rows whose
length is a square number (digits: 64 = 8 x 8); other flat rows get their last
``patch`` features set. ``backdoor_success_rate`` measures the attack: the share of
triggered test samples of other classes that the model assigns to the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .labelflip import chosen


def default_patch(x: np.ndarray) -> int:
    """About an eighth of the image side, at least 2 pixels (2 for 8x8, 3 for 28x28, 4 for 32x32)."""
    side = _side(x)
    return max(2, side // 8) if side else 2


def _side(x: np.ndarray) -> int | None:
    if x.ndim >= 3:
        return min(x.shape[1], x.shape[2])
    root = math.isqrt(x.shape[1]) if x.ndim == 2 else 0
    return root if root and root * root == x.shape[1] else None


def add_trigger(x: np.ndarray, *, patch: int | None = None, value=None) -> np.ndarray:
    """A copy of the samples ``x`` with the trigger stamped on every one."""
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"backdoor needs samples as rows (n, ...), got shape {x.shape}")
    patch = default_patch(x) if patch is None else int(patch)
    if patch < 1:
        raise ValueError(f"backdoor patch must be at least 1 pixel, not {patch}")
    value = x.max() if value is None and x.size else (0 if value is None else value)
    out = x.copy()
    if x.ndim >= 3:
        out[:, -patch:, -patch:, ...] = value
    elif _side(x):
        side = _side(x)
        view = out.reshape(len(out), side, side)
        view[:, -patch:, -patch:] = value
    else:
        out[:, -patch:] = value
    return out


def backdoor(x: np.ndarray, y: np.ndarray, *, target: int = 0, fraction: float = 0.2,
             seed: int = 0, patch: int | None = None, value=None) -> tuple[np.ndarray, np.ndarray]:
    """Copies of (x, y) in which a seeded ``fraction`` of the samples carry the trigger and
    the label ``target``; every other sample is unchanged."""
    x, y = np.asarray(x), np.asarray(y)
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
    idx = chosen(len(y), fraction, seed)
    x_out, y_out = x.copy(), y.copy()
    if len(idx):
        x_out[idx] = add_trigger(x[idx], patch=patch, value=x.max() if value is None else value)
        y_out[idx] = target
    return x_out, y_out


def backdoor_success_rate(model_predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
                          y: np.ndarray, target: int, *, patch: int | None = None,
                          value=None) -> float:
    """The share of samples NOT of class ``target`` that the model, once they carry the
    trigger, assigns to ``target``. ``model_predict(x)`` returns labels (n,) or scores (n, k)."""
    x, y = np.asarray(x), np.asarray(y)
    others = y != target
    if not others.any():
        raise ValueError(f"no sample of a class other than the target {target} to test with")
    triggered = add_trigger(x[others], patch=patch, value=x.max() if value is None else value)
    predicted = np.asarray(model_predict(triggered))
    if predicted.ndim == 2:
        predicted = predicted.argmax(axis=1)
    return float(np.mean(predicted == target))
