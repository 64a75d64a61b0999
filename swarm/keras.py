"""SwarmCallback for Keras 3: `from swarm.keras import SwarmCallback`, then
`model.fit(..., callbacks=[SwarmCallback(syncFrequency=..., minPeers=...)])`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from swarm.callback.core import CoreViews, SwarmCallbackCore
from swarm.callback.params import parse_params

DEFAULT_ADS_VAL_BATCH_SIZE = 32


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
            weight_names=lambda: [w.path for w in self.model.weights])

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

    def _val_loss(self) -> float:
        data = self.swarm_params.ads_val_data
        batch_size = self.swarm_params.ads_val_batch_size or DEFAULT_ADS_VAL_BATCH_SIZE
        # evaluate() resets the compiled metrics, which fit is accumulating for this
        # epoch's logs: keep their state and put it back afterwards.
        saved = [(v, np.array(v.numpy())) for v in self.model.metrics_variables]
        try:
            if isinstance(data, (tuple, list)) and len(data) in (2, 3):
                result = self.model.evaluate(
                    data[0], data[1], sample_weight=data[2] if len(data) == 3 else None,
                    batch_size=batch_size, verbose=0, return_dict=True)
            else:  # a tf.data.Dataset, PyDataset or generator yielding (x, y)
                result = self.model.evaluate(data, verbose=0, return_dict=True)
        finally:
            for variable, value in saved:
                variable.assign(value)
        return float(result["loss"])

    def _save_final(self, weights, directory: Path) -> Path:
        # The core has already loaded `weights` into the model.
        path = directory / f"{self.model.name}.keras"
        self.model.save(path)
        return path
