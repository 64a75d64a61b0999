"""Handwritten digits with a small MLP in plain NumPy: the demo's swarm node.

scikit-learn's bundled 8x8 digits (1397 training, 400 test images), a 64-32-10
network with ReLU, trained by minibatch SGD on the cross-entropy, through the
framework-free `swarm.callback.SwarmCallback`. The demo splits the training set by
label (PARTITION=label), so each node alone sees only some digits. Settings come from
the environment like every example's (see examples/README.md); `--local` trains alone.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))

import numpy as np  # noqa: E402

from example import Settings, load_node_data, recorder, settings, softmax  # noqa: E402
from numpy_example import fit  # noqa: E402

HIDDEN = 32
NUM_CLASSES = 10


class MLP:
    """softmax(relu(x W1 + b1) W2 + b2); weights exchanged as a dict of float32 arrays.

    The initial weights come from the base seed, so every node builds the same model
    (the swarm's first round would make them equal anyway; local baselines match too).
    """

    def __init__(self, inputs: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.params = {
            "w1": (rng.standard_normal((inputs, HIDDEN)) * np.sqrt(2 / inputs)).astype(np.float32),
            "b1": np.zeros(HIDDEN, np.float32),
            "w2": (rng.standard_normal((HIDDEN, NUM_CLASSES)) * np.sqrt(2 / HIDDEN)).astype(np.float32),
            "b2": np.zeros(NUM_CLASSES, np.float32)}

    def get_weights(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self.params.items()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        self.params = {name: np.array(weights[name], np.float32) for name in self.params}

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        p = self.params
        return softmax(np.maximum(x @ p["w1"] + p["b1"], 0) @ p["w2"] + p["b2"])

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> tuple[float, int]:
        """One SGD step on a batch; returns its summed loss and its correct count."""
        p = self.params
        hidden = np.maximum(x @ p["w1"] + p["b1"], 0)
        probs = softmax(hidden @ p["w2"] + p["b2"])
        rows = np.arange(len(y))
        loss = float(-np.log(np.maximum(probs[rows, y], 1e-12)).sum())
        correct = int((probs.argmax(1) == y).sum())
        d_logits = probs
        d_logits[rows, y] -= 1.0
        d_logits /= len(y)
        d_hidden = (d_logits @ p["w2"].T) * (hidden > 0)
        grads = {"w2": hidden.T @ d_logits, "b2": d_logits.sum(0),
                 "w1": x.T @ d_hidden, "b1": d_hidden.sum(0)}
        for name, grad in grads.items():
            p[name] -= (learning_rate * grad).astype(np.float32)
        return loss, correct


def train(config: Settings) -> None:
    data = load_node_data("digits", config)
    metrics = recorder(config, data, model=f"mlp-64-{HIDDEN}-10", optimizer="sgd")
    x, x_test = data.train_x, data.test_x
    fit(MLP(data.train_x.shape[1], config.seed), config, data, metrics, x, x_test)


def main() -> int:
    config = settings(__doc__.splitlines()[0], max_epochs=20, batch_size=16,
                      learning_rate=0.1, sync_frequency=4)
    train(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
