"""Deterministic, well-scaled random weights for a GFL model, reproducible from a seed.

Used by the mmdetection comparison script (bench/mmdet_parity.py), which records mmdetection's outputs for
such models into tests/fixtures/, and by the tests that check gfldet against those records: the weights
themselves need not be stored (same torch version, same numbers).
"""
from __future__ import annotations

import math

import torch

import gfldet


def seeded_init_(model: gfldet.GFL, seed: int) -> gfldet.GFL:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in sorted(model.state_dict().items()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) * 0.5 + 0.75)
            elif name.endswith("running_mean"):
                t.copy_(torch.randn(t.shape, generator=g) * 0.1)
            elif t.dim() == 4:  # conv weight: keep activations O(1)
                fan_in = t.shape[1] * t.shape[2] * t.shape[3]
                t.copy_(torch.randn(t.shape, generator=g) / math.sqrt(fan_in))
            elif name.endswith("scale"):
                t.copy_(1.0 + 0.2 * torch.randn(t.shape, generator=g))
            elif name.endswith("weight"):  # norm weights
                t.copy_(1.0 + 0.1 * torch.randn(t.shape, generator=g))
            else:  # biases
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
        model.head.gfl_cls.bias.add_(-1.5)  # a realistic number of scores above 0.05
    return model


def random_gts(n: int, h: int, w: int, num_classes: int, seed: int, min_side: float = 4.0):
    g = torch.Generator().manual_seed(seed)
    wh = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6]) + min_side
    xy = torch.rand(n, 2, generator=g) * (torch.tensor([w, h]) - wh).clamp(min=1)
    boxes = torch.cat([xy, xy + wh], dim=1)
    return boxes, torch.randint(0, num_classes, (n,), generator=g)
