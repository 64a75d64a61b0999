"""A Hugging Face Trainer program with swarm.hf.SwarmCallback: a tiny BERT built from a
config (no download) learns whether token 7 occurs in a sequence. Run as the ML sidecar
of test_callback_hf.py's two-node swarm. Environment: NODE_INDEX, MIN_PEERS, MODEL_DIR."""

import hashlib
import json
import os

import numpy as np
import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

from swarm.hf import SwarmCallback

VOCAB, LENGTH = 32, 12


class Tokens(torch.utils.data.Dataset):
    def __init__(self, seed: int, size: int):
        rng = np.random.default_rng(seed)
        self.ids = torch.tensor(rng.integers(8, VOCAB, (size, LENGTH)))
        has = rng.random(size) < 0.5
        where = rng.integers(0, LENGTH, size)
        self.ids[has, where[has]] = 7
        self.labels = torch.tensor(has.astype("int64"))

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(LENGTH, dtype=torch.long),
                "labels": self.labels[i]}


def main() -> int:
    node = int(os.environ.get("NODE_INDEX", "0"))
    model_dir = os.environ["MODEL_DIR"]
    torch.manual_seed(node)  # different starts: the BEGIN round must make them equal
    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32,
                        max_position_embeddings=LENGTH, num_labels=2)
    model = BertForSequenceClassification(config)
    val = torch.utils.data.DataLoader(Tokens(99, 64), batch_size=32)
    swarm = SwarmCallback(syncFrequency=4, minPeers=int(os.environ.get("MIN_PEERS", "2")),
                          adsValData=val, adsValBatchSize=32, totalEpochs=2)
    args = TrainingArguments(output_dir=os.path.join(model_dir, "trainer"), num_train_epochs=2,
                             per_device_train_batch_size=16, learning_rate=5e-3,
                             save_strategy="no", report_to=[], use_cpu=True, seed=node,
                             disable_tqdm=True, logging_strategy="no")
    trainer = Trainer(model=model, args=args, train_dataset=Tokens(node, 160),
                      callbacks=[swarm])
    trainer.train()
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().cpu().numpy().tobytes())
    with open(os.path.join(model_dir, "result.json"), "w") as f:
        json.dump({"weights_sha256": digest.hexdigest(), "rounds": swarm.rounds_done,
                   "final_model_path": str(swarm.final_model_path)}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
