"""The Keras examples' shared training loop: model.fit as a swarm node or alone, with metrics."""

from __future__ import annotations

import keras
import numpy as np

from example import NodeData, Settings, attach_attack, finish, log_epoch, round_listener
from swarm.metrics import MetricsRecorder

PREDICT_BATCH_SIZE = 256


class EpochMetrics(keras.callbacks.Callback):
    """Records each epoch in metrics.json: fit's training averages and the test set's
    metrics, measured with predict so that every example computes them alike."""

    def __init__(self, metrics: MetricsRecorder, y_test: np.ndarray, scores):
        super().__init__()
        self._metrics, self._y_test, self._scores = metrics, y_test, scores

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        log_epoch(self._metrics, epoch + 1, self._y_test, self._scores(),
                  train_loss=float(logs["loss"]), train_acc=float(logs["accuracy"]))


def fit(model: keras.Model, config: Settings, data: NodeData, metrics: MetricsRecorder,
        x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray) -> None:
    """Trains a compiled `model` (softmax outputs, an "accuracy" metric) on this node's
    share, with the SwarmCallback unless `config.local`, and writes metrics.json."""

    def test_scores() -> np.ndarray:
        return model.predict(x_test, batch_size=PREDICT_BATCH_SIZE, verbose=0)

    callbacks: list[keras.callbacks.Callback] = []
    if not config.local:
        from swarm.keras import SwarmCallback
        swarm = SwarmCallback(**config.swarm_params())
        swarm.add_merge_listener(round_listener(metrics, data.test_y, test_scores))
        attach_attack(config, swarm)
        callbacks.append(swarm)
    callbacks.append(EpochMetrics(metrics, data.test_y, test_scores))
    # The model was built under the base seed (the same start on every node); fit's
    # shuffling and dropout draw from this node's own seed.
    keras.utils.set_random_seed(config.node_seed)
    model.fit(x_train, y_train, batch_size=config.batch_size, epochs=config.max_epochs,
              shuffle=True, verbose=0, callbacks=callbacks)
    finish(metrics, data.test_y, test_scores(), model.get_weights())
