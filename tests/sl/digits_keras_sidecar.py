"""A test ML sidecar: a small Keras MLP on load_digits split by label (--local: alone)."""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from digits_data import node_env, split, write_result  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--local", action="store_true")
    args = parser.parse_args()
    node, nodes, epochs, model_dir = node_env()
    x, y, test_x, test_y = split(node, nodes)
    keras.utils.set_random_seed(node)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")], name="digits_mlp")
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    callbacks, callback = [], None
    if not args.local:
        from swarm.keras import SwarmCallback
        callback = SwarmCallback(syncFrequency=8, minPeers=int(os.environ["MIN_PEERS"]),
                                 nodeWeightage=50, mergeMethod="mean",
                                 useAdaptiveSync=False, checkinModelOnTrainEnd="snapshot")
        callbacks.append(callback)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, callbacks=callbacks)
    accuracy = float((model.predict(test_x, verbose=0).argmax(1) == test_y).mean())
    write_result(model_dir, node, accuracy, model.get_weights(),
                 callback.rounds_done if callback else 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
