"""A user's own Keras script with default SwarmCallback arguments (--local: no swarm).
OPTIMIZER: adam (its defaults, as most users write it) or sgd (rate 0.5)."""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402

from digits_data import node_env, split, write_result  # noqa: E402

node, nodes, epochs, model_dir = node_env()
x, y, test_x, test_y = split(node, nodes)
keras.utils.set_random_seed(node)
model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, activation="relu"),
                          keras.layers.Dense(10, activation="softmax")])
optimizer = (keras.optimizers.SGD(0.5) if os.environ.get("OPTIMIZER", "adam") == "sgd"
             else keras.optimizers.Adam())
model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
callbacks = []
if "--local" not in sys.argv:
    from swarm.keras import SwarmCallback
    callbacks.append(SwarmCallback(syncFrequency=8, minPeers=3, totalEpochs=epochs))
model.fit(x, y, epochs=epochs, verbose=0, callbacks=callbacks)
accuracy = float((model.predict(test_x, verbose=0).argmax(1) == test_y).mean())
write_result(model_dir, node, accuracy, model.get_weights(), 0)
