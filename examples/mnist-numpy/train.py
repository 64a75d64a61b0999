"""MNIST with softmax regression in plain NumPy, as one swarm node (no ML framework).

Minibatch SGD on the cross-entropy of a linear softmax model (784 x 10 weights and 10
biases, float32), through the framework-free `swarm.callback.SwarmCallback(get_weights,
set_weights, ...)`. Defaults: 8000 training samples, 10 epochs, batch 256, learning
rate 0.05, a sync every 4 batches. Settings come from the environment (see README.md);
`--local` trains the same code alone. The training is deterministic: with one node
(NUM_NODES=1, MIN_PEERS=1) a swarm run and a local run give the same metrics.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))

import numpy as np  # noqa: E402

from example import Settings, load_node_data, recorder, settings, softmax  # noqa: E402
from numpy_example import fit  # noqa: E402

NUM_CLASSES = 10
PIXELS = 28 * 28


class SoftmaxRegression:
    """p(y | x) = softmax(x W + b); weights exchanged as {"w", "b"} float32 arrays."""

    def __init__(self) -> None:
        self.w = np.zeros((PIXELS, NUM_CLASSES), np.float32)
        self.b = np.zeros(NUM_CLASSES, np.float32)

    def get_weights(self) -> dict[str, np.ndarray]:
        return {"w": self.w.copy(), "b": self.b.copy()}

    def set_weights(self, weights: dict[str, np.ndarray]) -> None:
        # Copies: the merged arrays stay the callback's, untouched by our updates.
        self.w = np.array(weights["w"], np.float32)
        self.b = np.array(weights["b"], np.float32)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        return softmax(x @ self.w + self.b)

    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> tuple[float, int]:
        """One SGD step on a batch; returns its summed loss and its correct count."""
        p = self.probabilities(x)
        rows = np.arange(len(y))
        loss = float(-np.log(np.maximum(p[rows, y], 1e-12)).sum())
        correct = int((p.argmax(1) == y).sum())
        p[rows, y] -= 1.0  # d(loss)/d(logits), per sample
        self.w -= (learning_rate * (x.T @ p) / len(y)).astype(np.float32)
        self.b -= (learning_rate * p.mean(0)).astype(np.float32)
        return loss, correct


def features(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) images as float32 (n, 784) rows in [0, 1]."""
    return images.reshape(len(images), PIXELS).astype(np.float32) / 255.0


def train(config: Settings) -> None:
    data = load_node_data("mnist", config)
    metrics = recorder(config, data, model="softmax-regression", optimizer="sgd")
    x, x_test = features(data.train_x), features(data.test_x)
    fit(SoftmaxRegression(), config, data, metrics, x, x_test)


def main() -> int:
    config = settings(__doc__.splitlines()[0], max_epochs=10, batch_size=256,
                      learning_rate=0.05, sync_frequency=4, train_samples=8000)
    train(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
