"""CUDA checks (skipped without a GPU): mixed-precision training step and CPU/GPU agreement."""
from __future__ import annotations

import pytest
import torch

import gfldet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _model():
    torch.manual_seed(0)
    m = gfldet.gfl_resnet18_fpn(num_classes=3, fpn_channels=64, head_channels=64, min_size=None, max_size=None)
    with torch.no_grad():
        m.head.gfl_cls.bias.fill_(0.0)
    return m


def test_amp_training_step_on_cuda():
    m = _model().cuda().train()
    imgs = [torch.rand(3, 128, 160, device="cuda"), torch.rand(3, 96, 128, device="cuda")]
    tg = [{"boxes": torch.tensor([[10.0, 10, 80, 90]], device="cuda"), "labels": torch.tensor([1], device="cuda")},
          {"boxes": torch.zeros(0, 4, device="cuda"), "labels": torch.zeros(0, dtype=torch.long, device="cuda")}]
    with torch.autocast("cuda", dtype=torch.float16):
        losses = m(imgs, tg)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    scaler = torch.amp.GradScaler("cuda")
    scaler.scale(sum(losses.values())).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.head.parameters() if p.grad is not None)


@torch.no_grad()
def test_cuda_matches_cpu():
    m = _model().eval()
    img = [torch.rand(3, 160, 192)]
    cpu = m(img)[0]
    gpu = m.cuda()([img[0].cuda()])[0]
    assert gpu["boxes"].shape == cpu["boxes"].shape
    torch.testing.assert_close(gpu["boxes"].cpu(), cpu["boxes"], rtol=0, atol=1e-2)
    torch.testing.assert_close(gpu["scores"].cpu(), cpu["scores"], rtol=0, atol=1e-3)
