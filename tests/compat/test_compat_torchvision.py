"""The torchvision extra's pair imports together and runs on the CPU: torchvision's
compiled ops (nms) and a model forward pass. Skipped where torchvision is not installed
(the torch extra's CPU torch has no torchvision build to pair with: see the README)."""

from __future__ import annotations

import pytest

torchvision = pytest.importorskip("torchvision", reason="the torchvision extra is not installed")


def test_torchvision_ops_and_a_model_run_on_the_cpu():
    import torch

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    kept = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert kept.tolist() == [0, 2]
    model = torchvision.models.resnet18(num_classes=10).eval()
    with torch.no_grad():
        out = model(torchvision.transforms.functional.normalize(
            torch.rand(2, 3, 32, 32), [0.5] * 3, [0.25] * 3))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
