"""The NumPy examples' shared training loop: minibatch SGD as a swarm node or alone."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from example import NodeData, Settings, attach_attack, finish, log_epoch, round_listener
from swarm.metrics import MetricsRecorder


class NumpyModel(Protocol):
    """What the loop needs of a model: its weights as a dict of arrays, class
    probabilities, and one SGD step returning the batch's summed loss and correct count."""

    def get_weights(self) -> dict[str, np.ndarray]: ...
    def set_weights(self, weights: dict[str, np.ndarray]) -> None: ...
    def probabilities(self, x: np.ndarray) -> np.ndarray: ...
    def step(self, x: np.ndarray, y: np.ndarray, learning_rate: float) -> tuple[float, int]: ...


def fit(model: NumpyModel, config: Settings, data: NodeData, metrics: MetricsRecorder,
        x: np.ndarray, x_test: np.ndarray) -> None:
    """Trains on this node's share (features `x`, labels data.train_y), with the
    framework-free SwarmCallback unless `config.local`, and writes metrics.json."""
    y = data.train_y
    swarm = None
    if not config.local:
        from swarm.callback import SwarmCallback
        swarm = SwarmCallback(model.get_weights, model.set_weights, **config.swarm_params())
        swarm.add_merge_listener(round_listener(metrics, data.test_y,
                                                lambda: model.probabilities(x_test)))
        attach_attack(config, swarm)
        swarm.on_train_begin()
    rng = np.random.default_rng(config.node_seed)
    for epoch in range(1, config.max_epochs + 1):
        loss_sum, correct, seen = 0.0, 0, 0
        order = rng.permutation(len(y))
        for start in range(0, len(y), config.batch_size):
            idx = order[start:start + config.batch_size]
            loss, right = model.step(x[idx], y[idx], config.learning_rate)
            loss_sum, correct, seen = loss_sum + loss, correct + right, seen + len(idx)
            if swarm is not None:
                swarm.on_batch_end()
                if swarm.swarm_done:
                    break
        log_epoch(metrics, epoch, data.test_y, model.probabilities(x_test),
                  train_loss=loss_sum / seen, train_acc=correct / seen)
        if swarm is not None:
            swarm.on_epoch_end(epoch)
            if swarm.swarm_done:
                break
    if swarm is not None:
        swarm.on_train_end()
    finish(metrics, data.test_y, model.probabilities(x_test), list(model.get_weights().values()))
