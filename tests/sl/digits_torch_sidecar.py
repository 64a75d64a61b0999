"""A test ML sidecar: a small PyTorch MLP with BatchNorm on load_digits split by label."""

from __future__ import annotations

import argparse
import os

import torch

from digits_data import node_env, split, write_result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--local", action="store_true")
    args = parser.parse_args()
    node, nodes, epochs, model_dir = node_env()
    x, y, test_x, test_y = (torch.from_numpy(a) for a in split(node, nodes))
    torch.manual_seed(node)
    model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.BatchNorm1d(32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.CrossEntropyLoss()
    callback = None
    if not args.local:
        from swarm.torch import SwarmCallback
        callback = SwarmCallback(syncFrequency=8, minPeers=int(os.environ["MIN_PEERS"]),
                                 model=model, nodeWeightage=50, mergeMethod="mean",
                                 lossFunction="CrossEntropyLoss",
                                 metricFunction="MulticlassAccuracy",
                                 metricFunctionArgs={"num_classes": 10},
                                 adsValData=(test_x, test_y), checkinModelOnTrainEnd="snapshot",
                                 useAdaptiveSync=os.environ.get("ADAPTIVE") == "1")
        callback.on_train_begin()
    generator = torch.Generator().manual_seed(node)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), 16):
            idx = order[start:start + 16]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
            if callback is not None:
                callback.on_batch_end()
        if callback is not None:
            callback.on_epoch_end(epoch)
            if callback.swarm_done:
                break
    if callback is not None:
        callback.on_train_end()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
    write_result(model_dir, node, accuracy,
                 [t.numpy() for t in model.state_dict().values()],
                 callback.rounds_done if callback else 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
