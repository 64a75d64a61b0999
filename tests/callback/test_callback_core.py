"""The framework-free core through the NumPy SwarmCallback and a stand-in SL node:
a softmax-regression loop on load_digits, NaN refusal, swarm_done, adaptive sync."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.datasets import load_digits

from swarm.callback import FINAL_LOG_LINE, SwarmCallback
from swarm.tensors import WeightsError


class SoftmaxRegression:
    """A model whose weights are [W, b]: plain NumPy, trained by gradient descent."""

    def __init__(self):
        digits = load_digits()
        self.x = (digits.data / 16.0).astype(np.float32)
        self.y = digits.target
        self.w = [np.zeros((64, 10), np.float32), np.zeros(10, np.float32)]

    def get(self):
        return [a.copy() for a in self.w]

    def set(self, weights):
        self.w = [np.array(a, dtype=np.float32) for a in weights]

    def step(self, batch: int, size: int = 64, lr: float = 0.5):
        x = self.x[batch * size:(batch + 1) * size]
        y = self.y[batch * size:(batch + 1) * size]
        logits = x @ self.w[0] + self.w[1]
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        p[np.arange(len(y)), y] -= 1
        self.w[0] -= lr * x.T @ p / len(y)
        self.w[1] -= lr * p.mean(0)

    def loss(self) -> float:
        logits = self.x @ self.w[0] + self.w[1]
        logits -= logits.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(logits).sum(1)) - logits[np.arange(len(self.y)), self.y]))


def test_numpy_loop_syncs_loads_merges_and_saves(sl_node, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    standin = sl_node()
    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=4, minPeers=2, nodeWeightage=30)
    cb.on_train_begin()
    assert standin.hellos[0].framework == "numpy"
    # The BEGIN round: everyone starts from the merged weights.
    assert standin.received[0].header.kind == 1
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in model.w]),
                                  standin.received[0].answer)
    batches = 28
    for batch in range(batches):
        model.step(batch)
        cb.on_batch_end()
        if (batch + 1) % 4 == 0:
            last = standin.syncs[-1]
            # What was sent is what the model had; what it has now is the merge.
            assert last.header.weight == 30
            now = np.concatenate([a.ravel() for a in model.w])
            assert np.array_equal(now, last.answer)
    cb.on_epoch_end(0)
    assert len(standin.syncs) == 1 + batches // 4 == cb.rounds_done
    cb.on_train_end()
    assert [r.call for r in standin.received][-1] == "Finish"
    assert standin.received[-1].header.checkin_model_on_train_end == "snapshot"  # the default
    assert cb.swarm_done
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in model.w]), standin.final())
    saved = np.load(tmp_path / "model" / "saved_models" / "swarm_model.npz")
    np.testing.assert_array_equal(saved["arr_0"], model.w[0])
    assert cb.final_model_path == tmp_path / "model" / "saved_models" / "swarm_model.npz"
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == FINAL_LOG_LINE
    assert any(m.startswith("Swarm round 3: 2 participants") for m in messages)


def test_nan_is_refused_locally_and_never_sent(sl_node):
    standin = sl_node()
    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=2, minPeers=2)
    cb.on_train_begin()
    cb.on_batch_end()
    model.w[1][3] = np.nan
    with pytest.raises(WeightsError) as error:
        cb.on_batch_end()
    assert "tensor '1'" in str(error.value) and "not sent to the swarm" in str(error.value)
    assert len(standin.received) == 1  # only the BEGIN round


def test_swarm_done_in_a_sync_stops_syncing(sl_node, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    standin = sl_node(done_after=3)
    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=2, minPeers=2)
    cb.on_train_begin()
    batch = 0
    while not cb.swarm_done:
        model.step(batch)
        cb.on_batch_end()
        batch += 1
    assert batch == 4 and len(standin.received) == 3
    np.testing.assert_array_equal(np.concatenate([a.ravel() for a in model.w]), standin.final())
    for _ in range(5):
        cb.on_batch_end()  # a loop that does not check swarm_done: no more syncs
    cb.on_train_end()
    assert len(standin.received) == 3  # no Finish: the swarm is already done
    assert caplog.records[-1].getMessage() == FINAL_LOG_LINE


def _run_adaptive(sl_node, sync_frequency: int, losses: list[float], batches: int):
    standin = sl_node()
    model = SoftmaxRegression()
    values = iter(losses)
    cb = SwarmCallback(model.get, model.set, val_loss=lambda: next(values),
                       syncFrequency=sync_frequency, minPeers=2, useAdaptiveSync=True)
    cb.on_train_begin()  # the BEGIN merge's loss is the baseline
    synced_at, intervals = [], []
    for batch in range(1, batches + 1):
        before = len(standin.syncs)
        cb.on_batch_end()
        if len(standin.syncs) > before:
            synced_at.append(batch)
            intervals.append(cb.sync_interval)
    return synced_at, intervals


def test_adaptive_sync_lengthens_then_shortens(sl_node, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    # Improves twice (x1.5 each), then worsens twice (/2 each, floor 4 // 4 = 1).
    synced_at, intervals = _run_adaptive(sl_node, 4, [1.0, 0.8, 0.6, 0.9, 1.2], 24)
    assert intervals == [6, 9, 4, 2]
    assert synced_at == [4, 10, 19, 23]
    assert any("Adaptive sync: validation loss improved (1 -> 0.8): syncing every 6 "
               "batches instead of 4" in r.getMessage() for r in caplog.records)


def test_adaptive_sync_bounds(sl_node):
    # Always improving: capped at 8 x syncFrequency.
    _, intervals = _run_adaptive(sl_node, 2, [1.0 / k for k in range(1, 30)], 80)
    assert intervals[:6] == [3, 5, 8, 12, 16, 16]
    # Always worsening: never below syncFrequency // 4 (nor 1).
    _, intervals = _run_adaptive(sl_node, 8, [float(k) for k in range(1, 30)], 20)
    assert intervals[:3] == [4, 2, 2]


def test_adaptive_sync_needs_a_validation_loss():
    with pytest.raises(ValueError, match="adsValData is required when useAdaptiveSync"):
        SwarmCallback(list, print, syncFrequency=2, minPeers=2, useAdaptiveSync=True)
    with pytest.raises(ValueError, match="must be a callable returning the validation loss"):
        SwarmCallback(list, print, syncFrequency=2, minPeers=2, useAdaptiveSync=True,
                      adsValData=([1], [2]))


def test_hooks_before_on_train_begin_are_an_error(sl_node):
    sl_node()
    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=2, minPeers=2)
    with pytest.raises(RuntimeError, match="before on_train_begin"):
        cb.on_batch_end()


def test_loopback_bypasses_the_swarm(monkeypatch):
    monkeypatch.delenv("SWARM_SL_ADDRESS", raising=False)
    monkeypatch.setenv("SWARM_LOOPBACK", "true")
    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=1, minPeers=2)
    cb.on_train_begin()
    model.step(0)
    cb.on_batch_end()
    cb.on_epoch_end(0)
    cb.on_train_end()
    assert cb.rounds_done == 0 and not cb.swarm_done


@pytest.mark.parametrize("mode", ["active", "snapshot"])
def test_checkin_model_on_train_end(sl_node, mode):
    standin = sl_node()
    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=2, minPeers=2,
                       checkinModelOnTrainEnd=mode)
    cb.on_train_begin()
    for batch in range(3):  # a sync after batch 2, then one more local step
        model.step(batch)
        cb.on_batch_end()
    local = np.concatenate([a.ravel() for a in model.w])
    cb.on_train_end()
    finish = standin.received[-1]
    assert finish.call == "Finish" and finish.header.checkin_model_on_train_end == mode
    # active contributes the last merged model (as the established product does),
    # snapshot the model this node ended its training with.
    expected = standin.syncs[-1].answer if mode == "active" else local
    np.testing.assert_array_equal(finish.flat, expected)


def test_the_final_npz_is_written_whole_and_nothing_is_left_beside_it(tmp_path):
    from swarm.callback.core import save_npz
    path = save_npz({"w": np.arange(3.0)}, tmp_path)
    assert np.load(path)["w"].tolist() == [0.0, 1.0, 2.0]
    assert [p.name for p in tmp_path.iterdir()] == ["swarm_model.npz"]


def test_the_callback_reads_the_recorded_session_and_names_what_differs(caplog):
    caplog.set_level(logging.WARNING, logger="swarm.callback")
    from swarm.protos import local_api_pb2 as lpb
    from swarm.session import Session
    recorded = Session(min_peers=3, merge_method="mean", sync_frequency=8)

    class RecordedSession:  # a channel whose SL node recorded another session
        def hello(self, params, layout, framework):
            return lpb.HelloReply(node_id="n1", min_peers=3, config_json=recorded.to_json())

        def sync(self, flat, weight, kind):
            return lpb.SyncResult(round=1, participants=2), flat

    model = SoftmaxRegression()
    cb = SwarmCallback(model.get, model.set, syncFrequency=4, minPeers=2,
                       channel=RecordedSession())
    cb.on_train_begin()
    assert cb.session == recorded
    assert ("this sidecar asks for minPeers=2 but the swarm's session (recorded on the "
            "ledger) uses minPeers=3") in caplog.text
    assert "syncFrequency=4" in caplog.text and "syncFrequency=8" in caplog.text


def test_each_merged_model_s_validation_metrics_go_to_the_sl_node(sl_node):
    standin = sl_node()
    model = SoftmaxRegression()

    def validate():
        cb.record_metric("accuracy", float(((model.x @ model.w[0] + model.w[1]).argmax(1)
                                            == model.y).mean()))
        return model.loss()

    cb = SwarmCallback(model.get, model.set, val_loss=validate, syncFrequency=2, minPeers=2)
    cb.on_train_begin()
    for batch in range(6):
        model.step(batch)
        cb.on_batch_end()
    # One report per merge (BEGIN included), for the round whose merged model it measured.
    assert [m.round for m in standin.metrics] == list(range(1, len(standin.syncs) + 1)) == [1, 2, 3, 4]
    for report in standin.metrics:
        assert set(report.metrics) == {"val_loss", "accuracy"}
        assert report.metrics["val_loss"] > 0 and 0 <= report.metrics["accuracy"] <= 1
