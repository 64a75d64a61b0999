"""SwarmCallback for Keras: `from swarm.keras import SwarmCallback`, then
`model.fit(..., callbacks=[SwarmCallback(syncFrequency=..., minPeers=...)])`.

It serves whichever Keras `tf.keras` is: Keras 3 by default, or Keras 2 (the tf-keras
package) when TF_USE_LEGACY_KERAS is set, exactly as TensorFlow decides, so that
TensorFlow 2 programs written for `tf.keras` run unchanged. The two differ in the
Callback base class that `fit` expects, in weight names and in where metric state lives.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from swarm.callback.core import CoreViews, SwarmCallbackCore
from swarm.callback.params import parse_params
from swarm.callback.val_data import Replay, replayable

DEFAULT_ADS_VAL_BATCH_SIZE = 32
LEGACY_KERAS_ENV = "TF_USE_LEGACY_KERAS"


def legacy_keras_selected() -> bool:
    """TensorFlow's own rule (tensorflow/__init__.py) for `tf.keras` being Keras 2."""
    return os.environ.get(LEGACY_KERAS_ENV) in ("true", "True", "1")


KERAS_2 = legacy_keras_selected()
if KERAS_2:
    try:
        import tf_keras as keras
    except ImportError as error:
        raise ImportError(f"{LEGACY_KERAS_ENV} is set, so tf.keras is Keras 2, but the "
                          "tf-keras package is not installed: pip install 'swarm[keras2]' "
                          f"(or unset {LEGACY_KERAS_ENV} to use Keras 3)") from error
else:
    import keras

KERAS_NAME = f"Keras 2 (tf-keras {keras.__version__})" if KERAS_2 else f"Keras {keras.__version__}"


class SwarmCallback(CoreViews, keras.callbacks.Callback):
    """Makes `model.fit` take part in swarm training through the site's SL node.

    Responsible for the Keras side only: it exchanges all of `model.get_weights()`
    (trainable and non-trainable, e.g. BatchNorm statistics), measures the adaptive
    sync validation loss with `model.evaluate` on adsValData, sets
    `model.stop_training` once the swarm is done, and saves the final model as
    $MODEL_DIR/saved_models/<model name>.keras. When to sync and what to load is
    `SwarmCallbackCore`'s job. Optimizer state stays local to each node.

    syncFrequency counts on_train_batch_end calls, which are batches unless the
    model was compiled with steps_per_execution > 1 (then groups of that many).
    """

    def __init__(self, **kwargs: Any):
        super().__init__()
        # `self.params` is Keras's own (epochs, steps); ours are the swarm's.
        self.swarm_params = parse_params(**kwargs)
        if self.swarm_params.ml_platform not in (None, "TF", "KERAS"):
            raise ValueError(f"mlPlatform {self.swarm_params.ml_platform!r} is not one of: "
                             "TF, KERAS (this is swarm.keras.SwarmCallback)")
        self._core = SwarmCallbackCore(
            get_weights=lambda: self.model.get_weights(),
            set_weights=lambda weights: self.model.set_weights(weights),
            params=self.swarm_params, framework="keras",
            val_loss=self._val_loss if self.swarm_params.use_adaptive_sync else None,
            save_final=self._save_final,
            weight_names=self._weight_names, optimizer=self._optimizer)
        self._ads_val_data = replayable(self.swarm_params.ads_val_data)

    def set_model(self, model):
        if not isinstance(model, keras.Model):
            other = "Keras 3" if KERAS_2 else "Keras 2 (tf-keras)"
            raise TypeError(
                f"the model is a {other} model but swarm.keras uses {KERAS_NAME}: "
                f"{LEGACY_KERAS_ENV} decides both tf.keras and swarm.keras, so set it (or "
                "unset it) before the program starts, and build the model with tf.keras")
        super().set_model(model)

    # ---- Keras hooks --------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._core.on_train_begin()
        self._stop_if_done()

    def on_train_batch_end(self, batch, logs=None):
        self._core.on_batch_end()
        self._stop_if_done()

    def on_epoch_end(self, epoch, logs=None):
        self._core.on_epoch_end(epoch)
        self._stop_if_done()

    def on_train_end(self, logs=None):
        self._core.on_train_end()

    # ---- adapters -----------------------------------------------------------------

    def _stop_if_done(self) -> None:
        if self._core.swarm_done:
            self.model.stop_training = True

    def _weight_names(self) -> list[str]:
        # Keras 3 names a variable by its path ("model/dense/kernel"); Keras 2 by its
        # TensorFlow name ("dense/kernel:0").
        return [w.path if hasattr(w, "path") else w.name for w in self.model.weights]

    def _optimizer(self) -> tuple[str | None, list[bool]]:
        """The compiled optimizer's class name (inside a LossScaleOptimizer) and which
        of model.weights it trains."""
        optimizer = getattr(self.model, "optimizer", None)
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)
        trained = {id(w) for w in self.model.trainable_weights}
        mask = [id(w) in trained for w in self.model.weights]
        return (type(optimizer).__name__ if optimizer is not None else None), mask

    def _metric_variables(self) -> list:
        if hasattr(self.model, "metrics_variables"):  # Keras 3
            return list(self.model.metrics_variables)
        return [v for metric in self.model.metrics for v in metric.variables]

    def _val_loss(self) -> float:
        data = self._ads_val_data
        batch_size = self.swarm_params.ads_val_batch_size or DEFAULT_ADS_VAL_BATCH_SIZE
        # evaluate() resets the compiled metrics, which fit is accumulating for this
        # epoch's logs: keep their state and put it back afterwards.
        saved = [(v, np.array(v.numpy())) for v in self._metric_variables()]
        try:
            if isinstance(data, (tuple, list)) and len(data) in (2, 3):
                result = self.model.evaluate(
                    data[0], data[1], sample_weight=data[2] if len(data) == 3 else None,
                    batch_size=batch_size, verbose=0, return_dict=True)
            elif isinstance(data, Replay):  # a generator, replayed from its first pass
                batches = list(data)
                result = self.model.evaluate((b for b in batches), steps=len(batches),
                                             verbose=0, return_dict=True)
            else:  # a tf.data.Dataset or PyDataset/Sequence yielding (x, y)
                result = self.model.evaluate(data, verbose=0, return_dict=True)
        finally:
            for variable, value in saved:
                variable.assign(value)
        for name, value in result.items():  # the compiled metrics, e.g. accuracy
            if name != "loss" and np.ndim(value) == 0:
                self._core.record_metric(name, float(value))
        return float(result["loss"])

    def _save_final(self, weights, directory: Path) -> Path:
        # The core has already loaded `weights` into the model.
        path = directory / f"{self.model.name}.keras"
        self.model.save(path)
        return path


__all__ = ["KERAS_2", "KERAS_NAME", "SwarmCallback", "keras"]
