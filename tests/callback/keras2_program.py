"""A TensorFlow 2 program written for tf.keras (Keras 2), run by test_callback_keras2.py
with TF_USE_LEGACY_KERAS=1 against the stand-in SL node in SWARM_SL_ADDRESS.

argv: OUT_DIR MODE, MODE one of: fit (adaptive sync on a tuple, then model.save(dir)),
generator (adsValData a one-shot generator), nan (a non-finite weight is refused, and
a Keras 3 model is refused with a clear error).
Writes OUT_DIR/result.json.
"""

import json
import os
import sys

import numpy as np
import tensorflow as tf
from sklearn.datasets import load_digits

from swarm.keras import KERAS_2, SwarmCallback


def main() -> int:
    out_dir, mode = sys.argv[1], sys.argv[2]
    data = load_digits()
    x = (data.data / 16.0).astype("float32")
    y = data.target.astype("int32")
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.models.Sequential([
        tf.keras.layers.Dense(32, input_shape=(64,), activation="relu"),
        tf.keras.layers.BatchNormalization(),
        tf.keras.layers.Dense(10, activation="softmax"),
    ], name="digits_mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    result = {"keras_2": KERAS_2, "model_module": type(model).__module__,
              "tensors": len(model.weights)}

    if mode == "nan":
        weights = model.get_weights()
        weights[2][5] = np.inf  # the BatchNormalization gamma
        model.set_weights(weights)
        try:
            model.fit(x, y, batch_size=64, epochs=1, verbose=0,
                      callbacks=[SwarmCallback(syncFrequency=5, minPeers=2)])
        except ValueError as error:
            result["error"] = str(error)
        # A Keras 3 model (import keras) while tf.keras is Keras 2: a clear error at fit.
        import keras
        other = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10)])
        other.compile(optimizer="sgd", loss="mse")
        try:
            other.fit(x, np.zeros((len(x), 10)), epochs=1, verbose=0,
                      callbacks=[SwarmCallback(syncFrequency=5, minPeers=2)])
        except TypeError as error:
            result["mixed_error"] = str(error)
        write(out_dir, result)
        return 0

    if mode == "generator":
        def batches():
            for start in range(0, 300, 100):
                yield x[start:start + 100], y[start:start + 100]
        val_data = batches()
    else:
        val_data = (x[:300], y[:300])
    swarm = SwarmCallback(syncFrequency=4, minPeers=2, useAdaptiveSync=True,
                          adsValData=val_data, adsValBatchSize=100, totalEpochs=2,
                          mergeMethod="mean")
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[swarm])
    # The established MNIST program: a path without an extension, a SavedModel directory.
    model_path = os.path.join(out_dir, "digits_tf")
    model.save(model_path)
    loaded = tf.keras.models.load_model(model_path)
    np.savez(os.path.join(out_dir, "final.npz"), *model.get_weights())
    result.update(
        rounds=swarm.rounds_done, accuracy=history.history["accuracy"],
        loss=history.history["loss"], saved_dir=os.path.isdir(model_path),
        saved_matches=all(np.array_equal(a, b) for a, b in
                          zip(loaded.get_weights(), model.get_weights(), strict=True)),
        final_model_path=str(swarm.final_model_path))
    write(out_dir, result)
    return 0


def write(out_dir: str, result: dict) -> None:
    with open(os.path.join(out_dir, "result.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    raise SystemExit(main())
