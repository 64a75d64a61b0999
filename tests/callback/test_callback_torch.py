"""swarm.torch.SwarmCallback in a real PyTorch loop on load_digits, against the
stand-in SL node: the whole state_dict (buffers included) goes out and comes back."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from swarm.callback import FINAL_LOG_LINE
from swarm.torch import SwarmCallback


class DigitsNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(64, 32)
        self.norm = torch.nn.BatchNorm1d(32)  # running stats + int64 num_batches_tracked
        self.out = torch.nn.Linear(32, 10)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.hidden(x))))


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    x = torch.tensor(data.data / 16.0, dtype=torch.float32)
    y = torch.tensor(data.target, dtype=torch.long)
    return x, y


def assert_state_equals(model, expected: dict):
    state = model.state_dict()
    assert list(state) == list(expected)
    for name, tensor in state.items():
        assert tensor.dtype == torch.from_numpy(expected[name]).dtype, name
        assert np.array_equal(tensor.numpy(), expected[name]), name


def test_loop_exchanges_the_whole_state_dict(sl_node, digits, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    x, y = digits
    standin = sl_node()
    torch.manual_seed(0)
    model = DigitsNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=64)
    cb = SwarmCallback(syncFrequency=5, minPeers=2, model=model, totalEpochs=1,
                       lossFunction="CrossEntropyLoss", metricFunction="MulticlassAccuracy",
                       metricFunctionArgs={"num_classes": 10},
                       adsValData=(x[:200], y[:200]), adsValBatchSize=50)
    cb.on_train_begin()
    layout = standin.layout
    assert [t.name for t in layout.tensors] == list(model.state_dict())
    assert [t.dtype for t in layout.tensors if t.name == "norm.num_batches_tracked"] == ["int64"]
    assert_state_equals(model, layout.unflatten(standin.received[0].answer))

    batches = 0
    for xb, yb in loader:
        model.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(xb), yb).backward()
        optimizer.step()
        batches += 1
        sent_before = len(standin.syncs)
        cb.on_batch_end()
        if len(standin.syncs) > sent_before:
            sent = layout.unflatten(standin.syncs[-1].flat)
            # What left was the model after `batches` steps: BatchNorm counted them.
            assert int(sent["norm.num_batches_tracked"]) > 0
            assert_state_equals(model, layout.unflatten(standin.syncs[-1].answer))
    cb.on_epoch_end(1)
    assert len(standin.syncs) == batches // 5 + 1 == cb.rounds_done
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Validation MulticlassAccuracy: ") for m in messages) == batches // 5 + 1
    assert sum(m.startswith("Validation loss after round") for m in messages) == batches // 5 + 1

    cb.on_train_end()
    final = layout.unflatten(standin.final())
    assert_state_equals(model, final)
    path = tmp_path / "model" / "saved_models" / "DigitsNet.pt"
    assert cb.final_model_path == path
    saved = torch.load(path)
    assert all(np.array_equal(saved[k].numpy(), final[k]) for k in final)
    assert caplog.records[-1].getMessage() == FINAL_LOG_LINE


def test_adaptive_sync_with_a_dataloader(sl_node, digits):
    x, y = digits
    standin = sl_node(done_after=4)
    model = DigitsNet()
    val = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x[:128], y[:128]),
                                      batch_size=32)
    cb = SwarmCallback(syncFrequency=2, minPeers=2, model=model, useAdaptiveSync=True,
                       adsValData=val, lossFunction="CrossEntropyLoss")
    cb.on_train_begin()
    while not cb.swarm_done:
        cb.on_batch_end()
    assert len(standin.received) == 4
    cb.on_train_end()
    assert_state_equals(model, standin.layout.unflatten(standin.final()))


@pytest.mark.parametrize("kwargs, message", [
    ({"lossFunction": "CrossEntropy"},
     "lossFunction 'CrossEntropy' is not a torch.nn loss; similar names: CrossEntropyLoss"),
    ({"metricFunction": "MultiClassAccuracy"},
     "metricFunction 'MultiClassAccuracy' is not a torchmetrics metric; similar names: "
     "MulticlassAccuracy"),
    ({"metricFunction": "MulticlassAccuracy"},
     "metricFunctionArgs {} do not fit MulticlassAccuracy"),
    ({"lossFunction": "NLLLoss", "lossFunctionArgs": {"reduce_it": True}},
     "lossFunctionArgs {'reduce_it': True} do not fit NLLLoss"),
    ({"useAdaptiveSync": True, "adsValData": ([0.0], [0])},
     "useAdaptiveSync needs lossFunction"),
    ({"mlPlatform": "KERAS"}, "mlPlatform 'KERAS' is not one of: PYTORCH"),
])
def test_bad_loss_and_metric_names_fail_at_construction(kwargs, message):
    with pytest.raises(ValueError) as error:
        SwarmCallback(syncFrequency=5, minPeers=2, model=DigitsNet(), **kwargs)
    assert message in str(error.value)


def test_model_is_required():
    with pytest.raises(ValueError, match="model is required"):
        SwarmCallback(syncFrequency=5, minPeers=2)
    with pytest.raises(ValueError, match="model dict is not a torch.nn.Module"):
        SwarmCallback(syncFrequency=5, minPeers=2, model={})
