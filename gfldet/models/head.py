"""The GFL head: two shared towers of 3x3 conv + GroupNorm + ReLU, a joint class-quality classifier and a
distribution regressor (``4 * (n + 1)`` logits per location), with a learnable scale per level."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["GFLHead", "Scale"]


class Scale(nn.Module):
    """A learnable scalar multiplier (one per pyramid level), initialised to 1."""

    def __init__(self, value: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(value)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


class _GroupNorm(nn.GroupNorm):
    """GroupNorm that also accepts groups holding a single value (e.g. a 1x1 P7 map of a small image with as
    many channels as groups), where ``torch.nn.functional.group_norm`` refuses; the normalised value is then
    0 and the output is the bias, which is what the formula gives."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)


class ConvGN(nn.Module):
    """3x3 convolution (no bias), GroupNorm, ReLU: one layer of the head's towers (fused for CPU inference by
    gfldet.models.fusion)."""

    def __init__(self, in_ch: int, out_ch: int, gn_groups: int):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)
        self.gn = _GroupNorm(gn_groups, out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.gn(self.conv(x)))


_ConvGN = ConvGN  # the name GFLHead builds it by


class GFLHead(nn.Module):
    """Per level: ``(N, in_channels, H, W)`` -> class logits ``(N, C, H, W)`` and distribution logits
    ``(N, 4 * (n + 1), H, W)``. The level's ``Scale`` multiplies the distribution logits."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        reg_max: int = 16,
        num_levels: int = 5,
        gn_groups: int = 32,
        prior_prob: float = 0.01,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if feat_channels % gn_groups:
            raise ValueError(f"head channels ({feat_channels}) must be divisible by GroupNorm groups ({gn_groups})")
        self.num_classes, self.reg_max = num_classes, reg_max
        chans = [in_channels] + [feat_channels] * stacked_convs
        self.cls_convs = nn.ModuleList(_ConvGN(chans[i], chans[i + 1], gn_groups) for i in range(stacked_convs))
        self.reg_convs = nn.ModuleList(_ConvGN(chans[i], chans[i + 1], gn_groups) for i in range(stacked_convs))
        self.gfl_cls = nn.Conv2d(chans[-1], num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(chans[-1], 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.constant_(self.gfl_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward_level(self, x: Tensor, level: int) -> tuple[Tensor, Tensor]:
        cls_feat, reg_feat = x, x
        for conv in self.cls_convs:
            cls_feat = conv(cls_feat)
        for conv in self.reg_convs:
            reg_feat = conv(reg_feat)
        return self.gfl_cls(cls_feat), self.scales[level](self.gfl_reg(reg_feat)).float()

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if len(feats) != len(self.scales):
            raise ValueError(f"head built for {len(self.scales)} levels got {len(feats)} feature maps")
        outs = [self.forward_level(f, i) for i, f in enumerate(feats)]
        return [o[0] for o in outs], [o[1] for o in outs]
