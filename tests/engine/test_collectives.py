"""Under DDP every process must issue the same collectives in the same order, whether or not its images gave
positives (an image without boxes, or boxes the random warp pushed out): otherwise NCCL / gloo pair one process's
normaliser with another's and the run mixes numbers silently or hangs. Counted here by replacing ``reduce_mean`` in
every loss module with a counting identity."""
from __future__ import annotations

import pytest
import torch

import gfldet.models.criterion as criterion_mod
import gfldet.models.nanodet.loss as nanodet_loss_mod
import gfldet.models.quality as quality_mod
from gfldet.models import GFL
from gfldet.models.config import ModelConfig
from gfldet.models.nanodet.model import NanoDet, NanoDetSpec


@pytest.fixture
def count_collectives(monkeypatch):
    calls = []

    def counting(x):
        calls.append(1)
        return x

    for mod in (criterion_mod, quality_mod, nanodet_loss_mod):
        monkeypatch.setattr(mod, "reduce_mean", counting)
    return calls


def _image_and_targets(with_boxes: bool):
    img = torch.randint(0, 255, (3, 96, 96), dtype=torch.uint8)
    boxes = torch.tensor([[10.0, 12.0, 70.0, 80.0]]) if with_boxes else torch.zeros(0, 4)
    return [img], [{"boxes": boxes, "labels": torch.zeros(boxes.shape[0], dtype=torch.long)}]


@pytest.mark.parametrize("build", [
    lambda: GFL(ModelConfig(num_classes=2, depth=18, fpn_channels=32, head_channels=32, min_size=96, max_size=96)),
    lambda: GFL(ModelConfig(num_classes=2, depth=18, fpn_channels=32, head_channels=32, min_size=96, max_size=96,
                            quality="iou")),
    lambda: NanoDet(NanoDetSpec("0.5x", neck="ghost_pan", channels=32, strides=(8, 16, 32, 64), input_size=(96, 96),
                                keep_ratio=False, prior_offset=0.0, num_classes=2), training=True),
], ids=["gfl", "gfl-iou-branch", "nanodet-plus"])
def test_same_collectives_with_and_without_positives(build, count_collectives):
    torch.manual_seed(0)
    model = build().train()
    counts = []
    for with_boxes in (True, False):
        count_collectives.clear()
        losses = model(*_image_and_targets(with_boxes))
        assert all(torch.isfinite(v) for v in losses.values())
        counts.append(len(count_collectives))
    assert counts[0] == counts[1] > 0, counts
