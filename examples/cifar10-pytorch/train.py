"""CIFAR-10 with a CIFAR-style ResNet-18 in PyTorch, as one swarm node.

The ResNet-18 of He et al. (2016) as adapted to 32x32 images: a 3x3 stem without max
pooling, four stages of two basic blocks (64, 128, 256, 512 channels). SGD with
momentum 0.9, weight decay 5e-4 and a cosine schedule; training batches are randomly
cropped (4-pixel zero padding) and flipped, with plain torch ops. Settings come from
the environment (see README.md); `--local` trains the same model alone, and `--attack`
with `--poison-ratio` (ATTACK, POISON_RATIO) makes a share of the nodes attack.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "common"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from example import (Settings, attach_attack, finish, load_node_data, log_epoch,  # noqa: E402
                     recorder, round_listener, settings)

NUM_CLASSES = 10
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
CROP_PADDING = 4
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
EVAL_BATCH_SIZE = 256


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection (a 1x1 projection when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs: 3x3 stem, no max pooling, global average pooling."""

    def __init__(self, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU())
        stages, in_channels = [], 64
        for channels, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages += [BasicBlock(in_channels, channels, stride), BasicBlock(channels, channels, 1)]
            in_channels = channels
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC images as normalised float32 NCHW."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 32x32 crops of the 4-pixel zero-padded batch, then random horizontal flips."""
    n, _, h, w = x.shape
    padded = F.pad(x, (CROP_PADDING,) * 4)
    top = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * CROP_PADDING + 1, (n,), generator=generator)
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]  # (n, 1, h, 1)
    cols = (left[:, None] + torch.arange(w))[:, None, None, :]  # (n, 1, 1, w)
    crops = padded[torch.arange(n)[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                   rows, cols]
    flip = torch.rand(n, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], crops.flip(3), crops)


def probabilities(model: nn.Module, x: torch.Tensor) -> np.ndarray:
    """The model's class probabilities in eval mode (BatchNorm running statistics)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = torch.cat([F.softmax(model(x[i:i + EVAL_BATCH_SIZE]), 1)
                         for i in range(0, len(x), EVAL_BATCH_SIZE)])
    model.train(was_training)
    return out.double().numpy()


def train(config: Settings) -> None:
    data = load_node_data("cifar10", config)
    metrics = recorder(config, data, model="resnet18-cifar", optimizer="sgd",
                       momentum=MOMENTUM, weight_decay=WEIGHT_DECAY, schedule="cosine")
    x, y = to_tensor(data.train_x), torch.from_numpy(data.train_y)
    x_test = to_tensor(data.test_x)
    torch.manual_seed(config.seed)  # the same initial weights on every node
    model = ResNet18()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=MOMENTUM,
                                weight_decay=WEIGHT_DECAY)
    steps_per_epoch = -(-len(y) // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.max_epochs * steps_per_epoch)
    swarm = None
    if not config.local:
        from swarm.torch import SwarmCallback
        swarm = SwarmCallback(model=model, **config.swarm_params())
        swarm.add_merge_listener(round_listener(metrics, data.test_y,
                                                lambda: probabilities(model, x_test)))
        attach_attack(config, swarm)
        swarm.on_train_begin()
    generator = torch.Generator().manual_seed(config.node_seed)
    for epoch in range(1, config.max_epochs + 1):
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), config.batch_size):
            idx = order[start:start + config.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm cannot train on a single sample
            inputs, targets = augment(x[idx], generator), y[idx]
            optimizer.zero_grad()
            logits = model(inputs)
            loss = F.cross_entropy(logits, targets)
            loss.backward()
            optimizer.step()
            schedule.step()
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == targets).sum())
            seen += len(idx)
            if swarm is not None:
                swarm.on_batch_end()
                if swarm.swarm_done:
                    break
        log_epoch(metrics, epoch, data.test_y, probabilities(model, x_test),
                  train_loss=loss_sum / max(seen, 1), train_acc=correct / max(seen, 1))
        if swarm is not None:
            swarm.on_epoch_end(epoch)
            if swarm.swarm_done:
                break
    if swarm is not None:
        swarm.on_train_end()
    finish(metrics, data.test_y, probabilities(model, x_test),
           [t.numpy() for t in model.state_dict().values()])


def main() -> int:
    config = settings(__doc__.splitlines()[0], max_epochs=30, batch_size=128,
                      learning_rate=0.1, sync_frequency=128)
    train(config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
