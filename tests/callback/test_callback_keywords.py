"""Every keyword the established product's example programs pass keeps working, with
the values they pass: adsValData as a tuple, a generator or a DataLoader,
adsValBatchSize, lossFunctionArgs, metricFunction="F1Score" with its arguments,
mergeMethod, totalEpochs, and `swarmCallback.logger.setLevel(logging.DEBUG)`."""

from __future__ import annotations

import json
import logging
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from swarm.callback.val_data import Replay, replayable  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    return (data.data / 16.0).astype("float32"), data.target.astype("int64")


def validations(caplog, prefix="Validation loss after round") -> list[float]:
    return [float(r.getMessage().rsplit(": ", 1)[1]) for r in caplog.records
            if r.getMessage().startswith(prefix)]


# ---- PyTorch: the MNIST program's keywords -------------------------------------------

class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dense = torch.nn.Linear(64, 10)

    def forward(self, x):
        return torch.log_softmax(self.dense(torch.flatten(x, 1)), dim=1)


def run_torch_loop(cb, x, batches=8):
    cb.on_train_begin()
    for _ in range(batches):
        cb.on_batch_end()
    cb.on_epoch_end(1)
    cb.on_train_end()


@pytest.mark.parametrize("kind", ["tuple", "generator", "dataloader"])
def test_torch_ads_val_data_kinds_with_loss_and_f1_arguments(kind, sl_node, digits, caplog):
    from swarm.torch import SwarmCallback

    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = (torch.tensor(a) for a in digits)
    if kind == "tuple":
        val = (x[:200], y[:200])
    elif kind == "generator":
        val = ((x[i:i + 50], y[i:i + 50]) for i in range(0, 200, 50))
    else:
        val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:200], y[:200]),
                                          batch_size=50)
    standin = sl_node()
    cb = SwarmCallback(syncFrequency=2, minPeers=2, useAdaptiveSync=False, adsValData=val,
                       adsValBatchSize=50, model=Net(), totalEpochs=1,
                       lossFunction="CrossEntropyLoss", lossFunctionArgs={"reduction": "sum"},
                       metricFunction="F1Score",
                       metricFunctionArgs={"task": "multiclass", "num_classes": 10},
                       mergeMethod="mean")
    cb.logger.setLevel(logging.DEBUG)
    assert cb.logger.getEffectiveLevel() == logging.DEBUG
    run_torch_loop(cb, x)
    losses = validations(caplog)
    f1 = validations(caplog, "Validation MulticlassF1Score")
    # BEGIN plus one merge every 2 of 8 batches, each validated on all 200 samples.
    assert len(losses) == len(f1) == len(standin.syncs) == 5
    assert all(np.isfinite(loss) and loss > 0 for loss in losses)
    assert all(0.0 <= value <= 1.0 for value in f1)
    config = json.loads(standin.hellos[0].config_json)
    assert config["merge_method"] == "mean" and config["total_epochs"] == 1
    assert config["loss_function_args"] == {"reduction": "sum"}
    assert config["metric_function_args"] == {"task": "multiclass", "num_classes": 10}


def test_the_same_merged_model_gives_the_same_loss_from_a_tuple_and_a_generator(digits):
    from swarm.callback.params import parse_params
    from swarm.torch import SwarmCallback

    x, y = (torch.tensor(a) for a in digits)
    model = Net()
    results = []
    for val in ((x[:100], y[:100]), ((x[i:i + 25], y[i:i + 25]) for i in range(0, 100, 25))):
        cb = SwarmCallback(syncFrequency=1, minPeers=1, model=model, adsValData=val,
                           adsValBatchSize=25, lossFunction="NLLLoss")
        results.append([cb._validate() for _ in range(3)])  # the generator: every time
    assert results[0] == pytest.approx(results[1]) and len(set(results[1])) == 1
    assert parse_params(syncFrequency=1, minPeers=1).merge_method == "mean"


# ---- Keras: the MNIST and fraud-detection programs' keywords -------------------------

def keras_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, activation="softmax")],
                             name="kw_mlp")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


@pytest.mark.parametrize("kind", ["tuple", "generator"])
def test_keras_ads_val_data_kinds(kind, sl_node, digits, caplog):
    from swarm.keras import SwarmCallback

    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = digits
    val = ((x[:300], y[:300]) if kind == "tuple" else
           ((x[i:i + 100], y[i:i + 100]) for i in range(0, 300, 100)))
    standin = sl_node()
    swarm = SwarmCallback(syncFrequency=8, minPeers=2, useAdaptiveSync=True, adsValData=val,
                          adsValBatchSize=8, totalEpochs=1, mergeMethod="mean")
    swarm.logger.setLevel(logging.DEBUG)
    keras_model().fit(x, y, batch_size=64, epochs=1, verbose=0, callbacks=[swarm])
    losses = validations(caplog)
    assert len(losses) == len(standin.syncs) >= 3
    assert all(np.isfinite(loss) for loss in losses)
    # The model is the same at BEGIN on both runs, so is the first loss.
    assert losses[0] == pytest.approx(FIRST_LOSS.setdefault("v", losses[0]), rel=1e-5)


FIRST_LOSS: dict = {}


def test_fraud_detection_keywords_without_validation_data(sl_node, digits):
    from swarm.keras import SwarmCallback

    x, y = digits
    standin = sl_node()
    swarm = SwarmCallback(syncFrequency=128, minPeers=2, mergeMethod="mean", totalEpochs=3)
    keras_model().fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[swarm])
    config = json.loads(standin.hellos[0].config_json)
    assert (config["sync_frequency"], config["merge_method"], config["total_epochs"]) == \
        (128, "mean", 3)


# ---- the replay itself -----------------------------------------------------------------

def test_replay_keeps_a_generator_and_refuses_an_endless_one():
    gen = (i for i in range(3))
    replay = replayable(gen)
    assert isinstance(replay, Replay)
    first = []
    for item in replay:  # a pass that stops early keeps what it read
        first.append(item)
        break
    assert list(replay) == [0, 1, 2] == list(replay) and len(replay) == 3
    data = (np.zeros(2), np.ones(2))
    assert replayable(data) is data
    loader = torch.utils.data.DataLoader(torch.arange(4), batch_size=2)
    assert replayable(loader) is loader

    def endless():
        while True:
            yield 1
    with pytest.raises(ValueError, match="adsValData yielded more than 5 batches"):
        list(Replay(endless(), limit=5))
