"""swarm.hf.SwarmCallback in a real transformers Trainer: against the stand-in SL node,
and in a real two-node swarm. The model is a tiny BERT built from a config."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch

pytest.importorskip("transformers", reason="transformers is not installed (pip install 'swarm[hf]')")

from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments  # noqa: E402

from swarm.callback import FINAL_LOG_LINE  # noqa: E402
from swarm.hf import SwarmCallback  # noqa: E402
from swarm.hf_transformers import SwarmCallback as EstablishedName  # noqa: E402

from hf_program import LENGTH, VOCAB, Tokens  # noqa: E402


def tiny_bert():
    torch.manual_seed(0)
    return BertForSequenceClassification(BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=LENGTH, num_labels=2))


def trainer_for(model, callback, tmp_path, epochs=2, **args):
    return Trainer(model=model, train_dataset=Tokens(0, 160), callbacks=[callback],
                   args=TrainingArguments(output_dir=str(tmp_path / "trainer"),
                                          num_train_epochs=epochs, per_device_train_batch_size=16,
                                          save_strategy="no", report_to=[], use_cpu=True,
                                          disable_tqdm=True, logging_strategy="no", **args))


def test_trainer_syncs_every_n_steps_and_saves_the_final_model(sl_node, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="swarm.callback")
    standin = sl_node()
    model = tiny_bert()
    # No model=: the Trainer passes its own. adsValData: dict batches with labels.
    swarm = SwarmCallback(syncFrequency=4, minPeers=2, useAdaptiveSync=True,
                          adsValData=torch.utils.data.DataLoader(Tokens(9, 48), batch_size=16))
    assert EstablishedName is SwarmCallback
    trainer_for(model, swarm, tmp_path).train()
    steps = 2 * 10  # 160 samples / 16 per step, 2 epochs
    assert len(standin.syncs) >= steps // (4 * 8) + 1 and standin.syncs[0].header.kind == 1
    assert [t.name for t in standin.layout.tensors] == list(model.state_dict())
    assert standin.received[-1].call == "Finish"
    final = standin.layout.unflatten(standin.final())
    for name, tensor in model.state_dict().items():
        assert np.array_equal(tensor.numpy(), final[name]), name
    saved = tmp_path / "model" / "saved_models" / "BertForSequenceClassification"
    assert swarm.final_model_path == saved and (saved / "config.json").exists()
    reloaded = BertForSequenceClassification.from_pretrained(saved)
    assert all(np.array_equal(t.numpy(), final[n]) for n, t in reloaded.state_dict().items()
               if n in final)
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("Validation loss after round") for m in messages) == len(standin.syncs)
    assert messages[-1] == FINAL_LOG_LINE


def test_swarm_done_stops_the_trainer(sl_node, tmp_path):
    standin = sl_node(done_after=3)
    model = tiny_bert()
    swarm = SwarmCallback(syncFrequency=2, minPeers=2, model=model)
    trainer = trainer_for(model, swarm, tmp_path, epochs=5)
    trainer.train()
    assert swarm.swarm_done and trainer.state.global_step == 4  # BEGIN, step 2, step 4: done
    assert [r.call for r in standin.received] == ["Sync"] * 3


def test_parameters_are_checked():
    with pytest.raises(ValueError, match="mlPlatform 'KERAS' is not one of: PYTORCH"):
        SwarmCallback(syncFrequency=2, minPeers=2, mlPlatform="KERAS")
    with pytest.raises(ValueError, match="model dict is not a torch.nn.Module"):
        SwarmCallback(syncFrequency=2, minPeers=2, model={})
    with pytest.raises(ValueError, match="useAdaptiveSync needs lossFunction"):
        SwarmCallback(syncFrequency=2, minPeers=2, useAdaptiveSync=True, adsValData=([0], [0]))


@pytest.mark.slow
def test_two_node_swarm_of_trainers_ends_identical(sites, start_sn, start_sl, tmp_path):
    sentinel = start_sn(sites[0])
    nodes = []
    for index, site in enumerate(sites[:2]):
        env = {"NODE_INDEX": str(index), "MIN_PEERS": "2",
               "MODEL_DIR": str(tmp_path / f"model-{index}")}
        nodes.append(start_sl(site, sentinel, "tests/callback/hf_program.py", env)[0])
    for proc in nodes:
        assert proc.wait_exit(300) == 0, proc.output[-4000:]
    results = [json.loads((tmp_path / f"model-{i}" / "result.json").read_text()) for i in range(2)]
    assert results[0]["weights_sha256"] == results[1]["weights_sha256"], results
    assert results[0]["rounds"] >= 3
    for proc in nodes:
        assert FINAL_LOG_LINE in proc.output
        assert re.search(r"Validation loss after round \d+: \d", proc.output)
