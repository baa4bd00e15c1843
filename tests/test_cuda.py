"""CUDA checks (skipped without a GPU): mixed-precision training step and CPU/GPU agreement."""
from __future__ import annotations

import pytest
import torch

import gfldet

from ._seeded import seeded_init_

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
    opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    before = m.head.gfl_reg.weight.detach().clone()
    for _ in range(20):  # GradScaler starts at 2^16: the first steps may overflow and are skipped, as designed
        with torch.autocast("cuda", dtype=torch.float16):
            losses = m(imgs, tg)
        assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
        opt.zero_grad()
        scaler.scale(sum(losses.values())).backward()
        scaler.unscale_(opt)
        finite = all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)
        scale = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        if finite:  # a step was taken with finite gradients
            break
        assert scaler.get_scale() < scale  # an overflow lowers the scale
    assert finite, "no finite fp16 gradient within 20 steps"
    after = m.head.gfl_reg.weight.detach()
    assert torch.isfinite(after).all() and not torch.equal(after, before)


@torch.no_grad()
def test_cuda_matches_cpu(monkeypatch):
    # the same float32 computation on both devices: TF32 (cuDNN's default for convolutions on Ampere and later)
    # would round inputs to 10 mantissa bits; seeded weights spread the scores so that no near-tie decides NMS
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    m = seeded_init_(_model(), 1).eval()
    img = [torch.randint(0, 256, (3, 160, 192), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)]
    cpu = m(img)[0]
    gpu = m.cuda()([img[0].cuda()])[0]
    assert len(cpu["boxes"]) > 10 and gpu["boxes"].shape == cpu["boxes"].shape
    torch.testing.assert_close(gpu["labels"].cpu(), cpu["labels"])
    torch.testing.assert_close(gpu["boxes"].cpu(), cpu["boxes"], rtol=0, atol=1e-2)
    torch.testing.assert_close(gpu["scores"].cpu(), cpu["scores"], rtol=0, atol=1e-3)
