"""adamStepScaling: with an Adam-family optimizer a node sends its update scaled by 1.5 x
the number of peers plus momentum on the merged model's steps (so the merge adds the
peers' steps), never longer than the scaled update alone, and without momentum when its
step turns against the merged model's last one; with SGD, or with the keyword off, it
sends its model as it is."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from swarm.callback.adaptive_step import GAIN, MOMENTUM, AdaptiveStep, is_adaptive
from swarm.callback.params import parse_params
from swarm.torch import SwarmCallback


def test_update_is_scaled_by_the_peers_plus_momentum_on_trained_elements_only():
    mask = np.array([True, True, False])
    step = AdaptiveStep(mask)
    local = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    assert np.array_equal(step.outgoing(local, 3), local)  # no merged model yet
    first = np.array([0.5, 1.0, 0.0], dtype=np.float32)
    step.loaded(first, 1)
    sent = step.outgoing(local, 3)
    assert np.allclose(sent, [0.5 + GAIN * 3 * 0.5, 1.0 + GAIN * 3 * 1.0, 3.0])  # buffer as is
    # The merged model moved along this node's step: momentum turns it (and, so aligned,
    # would lengthen it: the bound keeps it 1.5 x 2 peers x the node's own step long).
    second = np.array([0.75, 1.25, 0.0], dtype=np.float32)
    local = np.array([0.75, 1.5, 3.0], dtype=np.float32)
    step.loaded(second, 2)
    sent = step.outgoing(local, 2)
    turned = GAIN * 2 * (local[:2] - second[:2]) + MOMENTUM * (second[:2] - first[:2])
    moved = sent[:2] - second[:2]
    assert np.isclose(np.linalg.norm(moved), GAIN * 2 * 0.25)
    assert np.allclose(moved / np.linalg.norm(moved), turned / np.linalg.norm(turned))
    assert sent[2] == local[2] and sent.dtype == np.float32
    assert np.array_equal(step.outgoing(local, 1), local)  # alone: as if training locally
    step.loaded(first, 4)  # a round missed here: no step to carry on
    assert np.allclose(step.outgoing(local, 3),
                       np.where(mask, first + GAIN * 3 * (local - first), local))


def test_a_step_against_the_merged_models_last_step_drops_the_momentum():
    """The restart: near convergence the steps turn back and forth, and momentum carried
    through the turns pushed 8 similar sites below plain averaging."""
    step = AdaptiveStep(np.ones(2, dtype=bool))
    first, second = np.zeros(2, np.float32), np.array([0.25, 1.5], np.float32)
    step.loaded(first, 1)
    step.loaded(second, 2)
    local = second + np.array([0.5, -1.0], np.float32)  # against [0.25, 1.5]
    assert np.allclose(step.outgoing(local, 2), second + GAIN * 2 * (local - second))
    kept = AdaptiveStep(np.ones(2, dtype=bool), restart=False)
    kept.loaded(first, 1)
    kept.loaded(second, 2)
    assert np.allclose(kept.outgoing(local, 2), second + GAIN * 2 * (local - second)
                       + MOMENTUM * (second - first))


def test_momentum_turns_the_step_but_never_makes_it_longer_than_gain_times_peers_times_the_update():
    """Similar sites: the merged steps line up, and unbounded momentum made the merged
    model move peers / (1 - momentum) node steps a round and diverge."""
    step = AdaptiveStep(np.ones(2, dtype=bool), momentum=0.8)
    first, second = np.zeros(2, np.float32), np.array([1.0, 1.0], np.float32)
    step.loaded(first, 1)
    step.loaded(second, 2)
    local = second + np.array([0.5, 0.0], np.float32)
    sent = step.outgoing(local, 4) - second
    unbounded = GAIN * 4 * (local - second) + 0.8 * (second - first)  # [3.8, 0.8]
    assert np.isclose(np.linalg.norm(sent), GAIN * 4 * 0.5)  # as long as 1.5 x 4 x the update
    assert np.allclose(sent / np.linalg.norm(sent), unbounded / np.linalg.norm(unbounded))
    free = AdaptiveStep(np.ones(2, dtype=bool), momentum=0.8, bounded=False)
    free.loaded(first, 1)
    free.loaded(second, 2)
    assert np.allclose(free.outgoing(local, 4) - second, unbounded)


def test_adam_family_names():
    assert all(map(is_adaptive, ["Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "Lion"]))
    assert not any(map(is_adaptive, ["SGD", "LBFGS", "Ftrl"]))


def test_the_keyword_is_on_by_default_and_can_be_turned_off():
    assert parse_params(syncFrequency=1, minPeers=1).adam_step_scaling is True
    assert parse_params(syncFrequency=1, minPeers=1,
                        adamStepScaling=False).adam_step_scaling is False
    with pytest.raises(ValueError, match="adamStepScaling 'no' is not one of: True, False"):
        parse_params(syncFrequency=1, minPeers=1, adamStepScaling="no")


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(8, 6)
        self.norm = torch.nn.BatchNorm1d(6)  # buffers: sent as they are
        self.out = torch.nn.Linear(6, 3)

    def forward(self, x):
        return self.out(torch.relu(self.norm(self.hidden(x))))


def train_and_sync(sl_node, optimizer_class, **kwargs):
    """Five steps, one sync (syncFrequency=5), against the stand-in (2 participants)."""
    standin = sl_node()
    torch.manual_seed(0)
    model = Net()
    optimizer = optimizer_class(model.parameters(), lr=0.01)
    cb = SwarmCallback(syncFrequency=5, minPeers=2, model=model, **kwargs)
    cb.on_train_begin()
    merged = standin.layout.unflatten(standin.received[0].answer)
    x, y = torch.randn(40, 8), torch.randint(0, 3, (40,))
    for step in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[step * 8:step * 8 + 8]),
                                          y[step * 8:step * 8 + 8]).backward()
        optimizer.step()
        if step == 4:
            local = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
        cb.on_batch_end()
    sent = standin.layout.unflatten(standin.syncs[-1].flat)
    cb.on_train_end()
    return merged, local, sent, {n for n, _ in model.named_parameters()}


def test_torch_adam_sends_the_update_scaled_by_the_peers(sl_node, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    merged, local, sent, params = train_and_sync(sl_node, torch.optim.Adam)
    for name in local:
        if name in params:  # merged + 1.5 x 2 peers x (local - merged); no momentum yet
            assert np.allclose(sent[name],
                               merged[name] + GAIN * 2 * (local[name] - merged[name]),
                               atol=1e-6), name
            assert not np.allclose(sent[name], local[name]), name
        else:
            assert np.array_equal(sent[name], local[name]), name
    assert any(r.getMessage().startswith("The optimizer is Adam, whose steps are normalised")
               for r in caplog.records)


@pytest.mark.parametrize("optimizer, kwargs", [(torch.optim.SGD, {}),
                                               (torch.optim.Adam, {"adamStepScaling": False})])
def test_sgd_or_the_keyword_off_sends_the_model_as_it_is(sl_node, optimizer, kwargs):
    _, local, sent, _ = train_and_sync(sl_node, optimizer, **kwargs)
    for name in local:
        assert np.array_equal(sent[name], local[name]), name
