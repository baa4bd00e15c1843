"""NanoDet's detection heads (inference part), with the official attribute names.

Both heads output what the official ``head.forward`` does: one tensor ``(N, A, C + 4 (R + 1))`` per batch, the
levels' ``(N, K, H_l, W_l)`` maps flattened row-major and concatenated along A (level-major), class logits first,
then the four edges' distribution logits over ``R + 1`` bins (``R = reg_max``).

- :class:`NanoDetPlusHead`: per level its own ``cls_convs`` (``stacked_convs`` depthwise-separable k x k convs,
  k = 5) and one 1x1 ``gfl_cls`` conv to ``C + 4 (R + 1)`` channels (classes and boxes share the tower).
- :class:`NanoDetHead`: the legacy head (NanoDet-m): per level 3x3 depthwise-separable convs; with
  ``share_cls_reg`` (NanoDet-m's setting) the same single tower and ``gfl_cls`` conv as above; without it a second
  ``reg_convs`` tower and a ``gfl_reg`` conv. The official head builds ``gfl_reg`` even when it shares the tower (and
  never uses it); gfldet does not, and the checkpoint loader drops those tensors.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .blocks import DepthwiseSeparable

__all__ = ["NanoDetPlusHead", "NanoDetHead"]


def _tower(in_channels: int, feat_channels: int, stacked_convs: int, kernel_size: int, activation: str) -> nn.ModuleList:
    return nn.ModuleList([DepthwiseSeparable(in_channels if i == 0 else feat_channels, feat_channels, kernel_size, 1,
                                             kernel_size // 2, activation) for i in range(stacked_convs)])


def _flatten_levels(outputs: Sequence[Tensor]) -> Tensor:
    """Per level ``(N, K, H_l, W_l)`` -> ``(N, A, K)``."""
    return torch.cat([o.flatten(start_dim=2) for o in outputs], dim=2).permute(0, 2, 1)


class NanoDetPlusHead(nn.Module):
    """NanoDet-Plus's head: per level ``cls_convs[l]`` then ``gfl_cls[l]`` (see the module docstring)."""

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 96, stacked_convs: int = 2,
                 kernel_size: int = 5, strides: Sequence[int] = (8, 16, 32, 64), reg_max: int = 7,
                 activation: str = "LeakyReLU"):
        super().__init__()
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        self.cls_convs = nn.ModuleList([_tower(in_channels, feat_channels, stacked_convs, kernel_size, activation)
                                        for _ in self.strides])
        self.gfl_cls = nn.ModuleList([nn.Conv2d(feat_channels, num_classes + 4 * (reg_max + 1), 1)
                                      for _ in self.strides])

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        outputs = []
        for x, tower, out_conv in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in tower:
                x = conv(x)
            outputs.append(out_conv(x))
        return _flatten_levels(outputs)


class NanoDetHead(nn.Module):
    """The legacy NanoDet head (see the module docstring); NanoDet-m: ``share_cls_reg=True``, 3 levels."""

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 96, stacked_convs: int = 2,
                 strides: Sequence[int] = (8, 16, 32), reg_max: int = 7, share_cls_reg: bool = True,
                 activation: str = "LeakyReLU", kernel_size: int = 3):
        super().__init__()
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        self.share_cls_reg = share_cls_reg
        box_channels = 4 * (reg_max + 1)
        self.cls_convs = nn.ModuleList([_tower(in_channels, feat_channels, stacked_convs, kernel_size, activation)
                                        for _ in self.strides])
        self.gfl_cls = nn.ModuleList([nn.Conv2d(feat_channels, num_classes + (box_channels if share_cls_reg else 0), 1)
                                      for _ in self.strides])
        if not share_cls_reg:
            self.reg_convs = nn.ModuleList([_tower(in_channels, feat_channels, stacked_convs, kernel_size, activation)
                                            for _ in self.strides])
            self.gfl_reg = nn.ModuleList([nn.Conv2d(feat_channels, box_channels, 1) for _ in self.strides])

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        outputs = []
        for l, x in enumerate(feats):
            cls_feat = x
            for conv in self.cls_convs[l]:
                cls_feat = conv(cls_feat)
            if self.share_cls_reg:
                outputs.append(self.gfl_cls[l](cls_feat))
                continue
            reg_feat = x
            for conv in self.reg_convs[l]:
                reg_feat = conv(reg_feat)
            outputs.append(torch.cat([self.gfl_cls[l](cls_feat), self.gfl_reg[l](reg_feat)], dim=1))
        return _flatten_levels(outputs)
