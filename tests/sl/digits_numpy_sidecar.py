"""A test ML sidecar: softmax regression in NumPy on load_digits, split by label.

Node NODE_INDEX of NUM_NODES trains on the digits whose label % NUM_NODES ==
NODE_INDEX (non-IID: each node sees only some classes). With --local it trains
alone (no swarm), the baseline. VALIDATE=1 measures each merged model on the held-out
set (loss and accuracy, reported to the SL node). Writes MODEL_DIR/result.json: held-out accuracy on
all ten classes and the SHA-256 of the final weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits


def data(node: int, nodes: int):
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    test = slice(0, 400)
    train_x, train_y = x[400:], y[400:]
    mine = train_y % nodes == node
    return train_x[mine], train_y[mine], x[test], y[test]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--local", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.5)
    args = parser.parse_args()
    node, nodes = int(os.environ["NODE_INDEX"]), int(os.environ["NUM_NODES"])
    epochs = int(os.environ.get("MAX_EPOCHS", "5"))
    model_dir = Path(os.environ.get("MODEL_DIR", "model"))
    model_dir.mkdir(parents=True, exist_ok=True)
    x, y, test_x, test_y = data(node, nodes)
    weights = {"w": np.zeros((64, 10), np.float32), "b": np.zeros(10, np.float32)}
    if int(os.environ.get("PAD_FLOATS", "0")):  # a larger model: every node owns a range
        weights["pad"] = np.zeros(int(os.environ["PAD_FLOATS"]), np.float32)

    def get_weights():
        return {k: v.copy() for k, v in weights.items()}

    def set_weights(new):
        weights.update({k: np.asarray(v, np.float32) for k, v in new.items()})

    def validate():
        # VALIDATE=1: each merged model's held-out loss and accuracy, for the SN's records.
        logits = test_x @ weights["w"] + weights["b"]
        logits = logits - logits.max(1, keepdims=True)
        log_p = logits - np.log(np.exp(logits).sum(1, keepdims=True))
        callback.record_metric("accuracy", float((logits.argmax(1) == test_y).mean()))
        return float(-log_p[np.arange(len(test_y)), test_y].mean())

    callback = None
    if not args.local:
        from swarm.callback import SwarmCallback
        callback = SwarmCallback(get_weights, set_weights,
                                 val_loss=validate if os.environ.get("VALIDATE") == "1" else None,
                                 syncFrequency=int(os.environ.get("SYNC_FREQUENCY", "4")),
                                 minPeers=int(os.environ["MIN_PEERS"]),
                                 mergeMethod=os.environ.get("MERGE_METHOD", "mean"),
                                 shardReplicas=int(os.environ.get("SHARD_REPLICAS", "1")),
                                 nodeWeightage=int(os.environ.get("NODE_WEIGHTAGE", "50")),
                                 checkinModelOnTrainEnd=os.environ.get("CHECKIN_ON_END", "snapshot"))
        callback.on_train_begin()
    rng = np.random.default_rng(node)
    for epoch in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), args.batch):
            idx = order[start:start + args.batch]
            logits = x[idx] @ weights["w"] + weights["b"]
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(idx)), y[idx]] -= 1.0
            weights["w"] -= args.lr * (x[idx].T @ p / len(idx)).astype(np.float32)
            weights["b"] -= args.lr * p.mean(0).astype(np.float32)
            if callback is not None:
                callback.on_batch_end()
                if callback.swarm_done:
                    break
        if callback is not None:
            callback.on_epoch_end(epoch)
            if callback.swarm_done:
                break
    if callback is not None:
        callback.on_train_end()
    accuracy = float(((test_x @ weights["w"] + weights["b"]).argmax(1) == test_y).mean())
    digest = hashlib.sha256(b"".join(v.tobytes() for v in weights.values())).hexdigest()
    (model_dir / "result.json").write_text(json.dumps(
        {"node": node, "accuracy": accuracy, "weights_sha256": digest,
         "rounds": callback.rounds_done if callback else 0}))
    print(f"node {node}: held-out accuracy {accuracy:.3f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
