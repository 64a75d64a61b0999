"""A user's own PyTorch loop with default SwarmCallback arguments (--local: no swarm).
OPTIMIZER: adam (its defaults, as most users write it) or sgd (rate 0.5)."""

import os
import sys

import torch

from digits_data import node_env, split, write_result

node, nodes, epochs, model_dir = node_env()
x, y, test_x, test_y = (torch.from_numpy(a) for a in split(node, nodes))
torch.manual_seed(node)
model = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
if os.environ.get("OPTIMIZER", "adam") == "sgd":
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
else:
    optimizer = torch.optim.Adam(model.parameters())
callback = None
if "--local" not in sys.argv:
    from swarm.torch import SwarmCallback
    callback = SwarmCallback(syncFrequency=8, minPeers=3, totalEpochs=epochs, model=model)
    callback.on_train_begin()
for epoch in range(epochs):
    for idx in torch.randperm(len(y)).split(32):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        optimizer.step()
        if callback:
            callback.on_batch_end()
    if callback:
        callback.on_epoch_end(epoch)
if callback:
    callback.on_train_end()
with torch.no_grad():
    accuracy = float((model(test_x).argmax(1) == test_y).float().mean())
write_result(model_dir, node, accuracy, [t.numpy() for t in model.state_dict().values()], 0)
