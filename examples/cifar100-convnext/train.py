"""CIFAR-100 with ConvNeXt-Tiny (keras.applications, trained from scratch), as one swarm node.

ConvNeXt-Tiny (Liu et al., 2022) built with weights=None and a 100-class head; inputs
scaled to [0, 1] and normalised with the CIFAR-100 mean and standard deviation inside
the model. AdamW (learning rate 5e-4, weight decay 0.05) on a cosine schedule over all
the training steps, and label smoothing (LABEL_SMOOTHING, default 0.1; 0 turns it off).
Settings come from the environment (see README.md); `--local` trains the same model alone.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from example import load_node_data, recorder, settings  # noqa: E402
from keras_example import fit  # noqa: E402

NUM_CLASSES = 100
WEIGHT_DECAY = 0.05
# Per-channel statistics of the CIFAR-100 training images, in [0, 1].
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def build_model(learning_rate: float, total_steps: int, label_smoothing: float) -> keras.Model:
    backbone = keras.applications.ConvNeXtTiny(
        weights=None, include_top=True, classes=NUM_CLASSES, input_shape=(32, 32, 3),
        include_preprocessing=False)  # its own preprocessing is ImageNet's; ours is below
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Rescaling(1.0 / 255.0)(inputs)
    x = keras.layers.Normalization(mean=CIFAR100_MEAN, variance=np.square(CIFAR100_STD))(x)
    model = keras.Model(inputs, backbone(x), name="convnext_tiny_cifar100")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, decay_steps=total_steps)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=WEIGHT_DECAY),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                  metrics=["accuracy"])
    return model


def main() -> int:
    config = settings(__doc__.splitlines()[0], max_epochs=100, batch_size=128,
                      learning_rate=5e-4, sync_frequency=128)
    label_smoothing = float(os.environ.get("LABEL_SMOOTHING") or 0.1)
    data = load_node_data("cifar100", config)
    metrics = recorder(config, data, model="convnext_tiny", optimizer="adamw",
                       weight_decay=WEIGHT_DECAY, schedule="cosine",
                       label_smoothing=label_smoothing)
    steps = config.max_epochs * -(-len(data.train_y) // config.batch_size)
    keras.utils.set_random_seed(config.seed)  # the same initial weights on every node
    model = build_model(config.learning_rate, steps, label_smoothing)
    # One-hot targets: Keras applies label smoothing to categorical labels only.
    fit(model, config, data, metrics, x_train=data.train_x.astype("float32"),
        y_train=keras.utils.to_categorical(data.train_y, NUM_CLASSES),
        x_test=data.test_x.astype("float32"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
