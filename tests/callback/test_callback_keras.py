"""swarm.keras.SwarmCallback in a real model.fit on load_digits, against the stand-in SL node."""

from __future__ import annotations

import logging
import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from swarm.callback.adaptive_step import GAIN  # noqa: E402
from swarm.callback import FINAL_LOG_LINE  # noqa: E402
from swarm.keras import SwarmCallback  # noqa: E402

BATCH = 64


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), data.target.astype("int32")


def make_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((64,)),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.BatchNormalization(),  # non-trainable moving statistics travel too
        keras.layers.Dense(10, activation="softmax"),
    ], name="digits_mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


class CheckAfterSync(keras.callbacks.Callback):
    """Runs after the SwarmCallback: whenever a sync happened, the model must hold
    exactly the stand-in's merge."""

    def __init__(self, standin):
        super().__init__()
        self.standin = standin
        self.seen = 0
        self.checked = 0

    def on_train_begin(self, logs=None):
        # The SwarmCallback, first in the list, has done the BEGIN round by now.
        self.seen = len(self.standin.received)
        expected = self.standin.layout.unflatten(self.standin.received[0].answer)
        assert all(np.array_equal(a, b) for a, b in zip(self.model.get_weights(), expected))

    def on_train_batch_end(self, batch, logs=None):
        if len(self.standin.received) > self.seen:
            self.seen = len(self.standin.received)
            expected = self.standin.layout.unflatten(self.standin.received[-1].answer)
            got = self.model.get_weights()
            assert all(np.array_equal(a, b) for a, b in zip(got, expected, strict=True))
            self.checked += 1


def test_fit_syncs_every_five_batches_and_saves_the_final_model(sl_node, digits, tmp_path,
                                                                caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = digits
    standin = sl_node()
    model = make_model()
    swarm = SwarmCallback(syncFrequency=5, minPeers=2, totalEpochs=2)
    check = CheckAfterSync(standin)
    model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[swarm, check], verbose=0)

    batches = 2 * -(-len(x) // BATCH)
    assert len(standin.syncs) == batches // 5 + 1
    assert standin.syncs[0].header.kind == 1  # BEGIN
    assert check.checked == batches // 5
    # All weights travel, the BatchNorm moving mean/variance included.
    assert len(standin.layout.tensors) == len(model.weights) == 8
    assert standin.hellos[0].framework == "keras"
    # Finish brought the final model: loaded, then saved under MODEL_DIR/saved_models.
    assert standin.received[-1].call == "Finish"
    final = standin.layout.unflatten(standin.final())
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), final))
    path = tmp_path / "model" / "saved_models" / "digits_mlp.keras"
    assert swarm.final_model_path == path and path.exists()
    loaded = keras.saving.load_model(path)
    assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), final))
    assert caplog.records[-1].getMessage() == FINAL_LOG_LINE


def test_swarm_done_stops_fit(sl_node, digits, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = digits
    standin = sl_node(done_after=3)  # BEGIN, the sync after batch 5, then done at 10
    model = make_model()
    swarm = SwarmCallback(syncFrequency=5, minPeers=2)
    history = model.fit(x, y, batch_size=BATCH, epochs=2, callbacks=[swarm], verbose=0)
    assert model.stop_training and swarm.swarm_done
    assert len(history.history["loss"]) == 1  # stopped inside the first epoch
    assert [r.call for r in standin.received] == ["Sync"] * 3  # no Finish needed
    final = standin.layout.unflatten(standin.final())
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), final))
    assert caplog.records[-1].getMessage() == FINAL_LOG_LINE


def test_adaptive_sync_evaluates_without_disturbing_fit_metrics(sl_node, digits, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = digits
    sl_node()
    model = make_model()
    swarm = SwarmCallback(syncFrequency=4, minPeers=2, useAdaptiveSync=True,
                          adsValData=(x[:300], y[:300]), adsValBatchSize=100)
    history = model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[swarm], verbose=0)
    losses = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith("Validation loss after round")]
    assert len(losses) == swarm.rounds_done  # one per merge, BEGIN included
    assert 0.0 < history.history["accuracy"][0] <= 1.0
    assert np.isfinite(history.history["loss"][0])
    # evaluate() resets the compiled metrics that fit accumulates; they are put back.
    before = [np.array(v.numpy()) for v in model.metrics_variables]
    assert any(b.any() for b in before)
    swarm._val_loss()
    after = [np.array(v.numpy()) for v in model.metrics_variables]
    assert all(np.array_equal(b, a) for b, a in zip(before, after, strict=True))


def test_keras_callback_validates_parameters():
    with pytest.raises(ValueError, match="mergeMethod 'avg' is not one of"):
        SwarmCallback(syncFrequency=5, minPeers=2, mergeMethod="avg")
    with pytest.raises(ValueError, match="mlPlatform 'PYTORCH' is not one of: TF, KERAS"):
        SwarmCallback(syncFrequency=5, minPeers=2, mlPlatform="PYTORCH")


def test_nan_weights_are_refused_with_the_keras_weight_name(sl_node, digits):
    x, y = digits
    standin = sl_node()
    model = make_model()
    weights = model.get_weights()
    weights[2][5] = np.inf  # the BatchNormalization gamma
    model.set_weights(weights)
    swarm = SwarmCallback(syncFrequency=5, minPeers=2)
    with pytest.raises(ValueError) as error:
        model.fit(x, y, batch_size=BATCH, epochs=1, callbacks=[swarm], verbose=0)
    message = str(error.value)
    assert "tensor '2' at index (5,)" in message
    assert re.search(r"\(digits_mlp/batch_normalization(_\d+)?/gamma\)", message)
    assert "not sent to the swarm" in message
    assert standin.received == []


class KeepWeights(keras.callbacks.Callback):
    """Listed before the SwarmCallback: the model's weights after each batch, as the
    SwarmCallback then sees them."""

    def __init__(self):
        super().__init__()
        self.after_batch = []

    def on_train_batch_end(self, batch, logs=None):
        self.after_batch.append(self.model.get_weights())


def test_adam_sends_its_update_scaled_by_the_peers(sl_node, digits, caplog):
    # adamStepScaling (on by default): merged + 1.5 x 2 peers x (local - merged) for the
    # trained weights; the BatchNorm moving statistics go as they are.
    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = digits
    standin = sl_node()
    model = make_model()
    keep = KeepWeights()
    model.fit(x[:5 * BATCH], y[:5 * BATCH], batch_size=BATCH, epochs=1, verbose=0,
              callbacks=[keep, SwarmCallback(syncFrequency=5, minPeers=2)])
    merged = standin.layout.unflatten(standin.syncs[0].answer)
    sent = standin.layout.unflatten(standin.syncs[1].flat)
    trained = {id(w) for w in model.trainable_weights}
    for weight, start, local, out in zip(model.weights, merged, keep.after_batch[4], sent,
                                         strict=True):
        if id(weight) in trained:
            assert np.allclose(out, start + GAIN * 2 * (local - start), atol=1e-6), weight.path
        else:
            assert np.array_equal(out, local), weight.path
    assert any(r.getMessage().startswith("The optimizer is Adam, whose steps are normalised")
               for r in caplog.records)
