"""CIFAR-10 with the small Keras CNN of the established swarm example, as one swarm node.

Two conv blocks (32 and 64 filters) and a 512-unit dense layer with dropout, RMSprop
(learning rate 1e-4, decay 1e-6), batch 32, a sync every 128 batches. Settings come
from the environment (see README.md); `--local` trains the same model alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import layers  # noqa: E402

from example import load_node_data, recorder, settings  # noqa: E402
from keras_example import fit  # noqa: E402

NUM_CLASSES = 10
# The established example's RMSprop(learning_rate=1e-4, decay=1e-6): Keras 3 spells the
# legacy per-step decay lr / (1 + decay * step) as an InverseTimeDecay schedule.
LR_DECAY = 1e-6


def build_model(learning_rate: float) -> keras.Model:
    model = keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.25),
        layers.Flatten(),
        layers.Dense(512, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ], name="cifar10_cnn")
    schedule = keras.optimizers.schedules.InverseTimeDecay(learning_rate, decay_steps=1,
                                                           decay_rate=LR_DECAY)
    model.compile(optimizer=keras.optimizers.RMSprop(schedule),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def main() -> int:
    config = settings(__doc__.splitlines()[0], max_epochs=100, batch_size=32,
                      learning_rate=1e-4, sync_frequency=128)
    data = load_node_data("cifar10", config)
    metrics = recorder(config, data, model="cifar10_cnn", optimizer="rmsprop", lr_decay=LR_DECAY)
    keras.utils.set_random_seed(config.seed)  # the same initial weights on every node
    model = build_model(config.learning_rate)
    fit(model, config, data, metrics, x_train=data.train_x.astype("float32") / 255.0,
        y_train=data.train_y, x_test=data.test_x.astype("float32") / 255.0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
