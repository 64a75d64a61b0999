"""The update transform: what a node sends in each regular round is transform(weights,
last merged model), through the real callback and a stand-in SL node; the start round
and the model the node keeps are untouched."""

from __future__ import annotations

import numpy as np
import pytest

from swarm.attacks import attack_spec
from swarm.callback import SwarmCallback
from swarm.tensors import WeightsError


class Model:
    def __init__(self):
        self.w = [np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4), np.ones(4, np.float32)]

    def get(self):
        return [a.copy() for a in self.w]

    def set(self, weights):
        self.w = [np.array(a, np.float32) for a in weights]

    def step(self):
        self.w = [a + 0.01 for a in self.w]

    def flat(self):
        return np.concatenate([a.ravel() for a in self.w])


def test_signflip_transform_sends_minus_scale_update_from_the_last_merge(sl_node):
    standin = sl_node()
    model = Model()
    cb = SwarmCallback(model.get, model.set, syncFrequency=2, minPeers=2)
    cb.add_update_transform(attack_spec(attack="signflip", poison_ratio=1.0,
                                        attack_scale=5).update_transform(seed=0))
    cb.on_train_begin()
    begin = standin.syncs[0]
    np.testing.assert_array_equal(begin.flat, Model().flat())  # the start round is untouched
    for _ in range(3):
        merged = model.flat()  # what the last round loaded
        model.step()
        model.step()
        trained = model.flat()
        cb.on_batch_end()
        cb.on_batch_end()
        sent = standin.syncs[-1].flat
        np.testing.assert_allclose(sent, merged - 5 * (trained - merged), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(model.flat(), standin.syncs[-1].answer)  # merge loaded
    cb.on_train_end()


def test_a_transform_of_the_wrong_shape_is_refused(sl_node):
    sl_node()
    model = Model()
    cb = SwarmCallback(model.get, model.set, syncFrequency=1, minPeers=2)
    cb.add_update_transform(lambda w, ref: w[:-1])
    cb.on_train_begin()
    model.step()
    with pytest.raises(WeightsError, match="returned shape"):
        cb.on_batch_end()
