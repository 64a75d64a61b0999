"""The lab's model: a small multilayer perceptron in plain NumPy, with SGD or Adam.

Framework-free so a task starts in milliseconds and runs the same in every backend:
``inputs -> width (x depth, ReLU) -> classes``, softmax cross-entropy, float32 weights
exchanged as a dict ``{"w0", "b0", "w1", ...}``. The initial weights come from the task's
seed only, so every node (and every local baseline) builds the same model.
"""

from __future__ import annotations

import numpy as np

OPTIMIZERS = ("sgd", "adam")
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class MLP:
    """softmax(relu(...relu(x W0 + b0)...) W_last + b_last), He-initialised from `seed`;
    `hidden` lists the hidden layers' widths (empty: softmax regression)."""

    def __init__(self, inputs: int, classes: int, hidden: list[int], seed: int,
                 optimizer: str = "sgd", lr: float = 0.1):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer {optimizer!r} is not one of {', '.join(OPTIMIZERS)}")
        rng = np.random.default_rng(seed)
        sizes = [inputs, *hidden, classes]
        self.params: dict[str, np.ndarray] = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            self.params[f"w{i}"] = (rng.standard_normal((fan_in, fan_out))
                                    * np.sqrt(2.0 / fan_in)).astype(np.float32)
            self.params[f"b{i}"] = np.zeros(fan_out, np.float32)
        self.layers = len(sizes) - 1
        self.optimizer = optimizer
        self.lr = np.float32(lr)
        self._steps = 0
        self._m = {k: np.zeros_like(v) for k, v in self.params.items()} if optimizer == "adam" else {}
        self._v = {k: np.zeros_like(v) for k, v in self.params.items()} if optimizer == "adam" else {}

    @property
    def describe(self) -> str:
        sizes = [self.params["w0"].shape[0]] + [self.params[f"b{i}"].size for i in range(self.layers)]
        return "mlp-" + "-".join(map(str, sizes))

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.params = {name: np.array(weights[name], np.float32) for name in self.params}

    def _forward(self, x: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        activations = [x]
        h = x
        for i in range(self.layers):
            z = h @ self.params[f"w{i}"] + self.params[f"b{i}"]
            if i < self.layers - 1:
                z = np.maximum(z, 0)
                activations.append(z)
            h = z
        return activations, h

    def evaluate(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        """(accuracy, mean cross-entropy) on (x, y); NaN for both on no samples."""
        if len(y) == 0:
            return float("nan"), float("nan")
        with np.errstate(all="ignore"):
            _, logits = self._forward(x)
            logp = log_softmax(logits.astype(np.float64))
            loss = float(-logp[np.arange(len(y)), y].mean())
            accuracy = float((logits.argmax(axis=1) == y).mean())
        if not np.all(np.isfinite(logits)):
            return float("nan"), float("nan")
        return accuracy, loss

    def step(self, x: np.ndarray, y: np.ndarray) -> None:
        """One optimizer step on the batch's mean cross-entropy."""
        with np.errstate(all="ignore"):  # a diverging run shows as NaN weights, not warnings
            activations, logits = self._forward(x)
            probs = np.exp(log_softmax(logits))
            probs[np.arange(len(y)), y] -= 1.0
            delta = probs / np.float32(len(y))
            grads = {}
            for i in reversed(range(self.layers)):
                grads[f"w{i}"] = activations[i].T @ delta
                grads[f"b{i}"] = delta.sum(axis=0)
                if i > 0:
                    delta = (delta @ self.params[f"w{i}"].T) * (activations[i] > 0)
            self._apply(grads)

    def _apply(self, grads: dict[str, np.ndarray]) -> None:
        if self.optimizer == "sgd":
            for name, grad in grads.items():
                self.params[name] -= (self.lr * grad).astype(np.float32)
            return
        self._steps += 1
        b1, b2 = ADAM_BETAS
        correction = np.float32(np.sqrt(1 - b2 ** self._steps) / (1 - b1 ** self._steps))
        for name, grad in grads.items():
            grad = grad.astype(np.float32)
            self._m[name] = np.float32(b1) * self._m[name] + np.float32(1 - b1) * grad
            self._v[name] = np.float32(b2) * self._v[name] + np.float32(1 - b2) * grad * grad
            self.params[name] -= (self.lr * correction * self._m[name]
                                  / (np.sqrt(self._v[name]) + np.float32(ADAM_EPS))).astype(np.float32)
