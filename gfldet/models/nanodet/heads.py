"""NanoDet's detection heads (inference part), with the official attribute names.

Both heads output what the official ``head.forward`` does: one tensor ``(N, A, C + 4 (R + 1))`` per batch, the
levels' ``(N, K, H_l, W_l)`` maps flattened row-major and concatenated along A (level-major), class logits first,
then the four edges' distribution logits over ``R + 1`` bins (``R = reg_max``).

- :class:`NanoDetPlusHead`: per level its own ``cls_convs`` (``stacked_convs`` depthwise-separable k x k convs,
  k = 5) and one 1x1 ``gfl_cls`` conv to ``C + 4 (R + 1)`` channels (classes and boxes share the tower).
- :class:`SimpleConvHead`: NanoDet-Plus's auxiliary head (training only): shared over the levels, separate class
  and box towers of ``stacked_convs`` 3x3 conv + GroupNorm + LeakyReLU, 3x3 ``gfl_cls`` and ``gfl_reg`` convs, the
  box output multiplied by a learnt per-level ``scales[l]``.
- :class:`NanoDetHead`: the legacy head (NanoDet-m): per level 3x3 depthwise-separable convs; with
  ``share_cls_reg`` (NanoDet-m's setting) the same single tower and ``gfl_cls`` conv as above; without it a second
  ``reg_convs`` tower and a ``gfl_reg`` conv. The official head builds ``gfl_reg`` even when it shares the tower (and
  never uses it); gfldet does not, and the checkpoint loader drops those tensors.

``forward_levels`` gives the per-level maps before flattening and ``split`` flattens per-level class and box maps
into ``(N, A, C)`` and ``(N, A, 4 (R + 1))``, the members of gfldet's head that the exporter reads.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..head import Scale
from .blocks import ConvGNAct, DepthwiseSeparable

__all__ = ["NanoDetPlusHead", "NanoDetHead", "SimpleConvHead"]


def _tower(in_channels: int, feat_channels: int, stacked_convs: int, kernel_size: int, activation: str) -> nn.ModuleList:
    return nn.ModuleList([DepthwiseSeparable(in_channels if i == 0 else feat_channels, feat_channels, kernel_size, 1,
                                             kernel_size // 2, activation) for i in range(stacked_convs)])


def _flatten_levels(outputs: Sequence[Tensor]) -> Tensor:
    """Per level ``(N, K, H_l, W_l)`` -> ``(N, A, K)``."""
    return torch.cat([o.flatten(start_dim=2) for o in outputs], dim=2).permute(0, 2, 1)


class _LevelHead(nn.Module):
    """What both heads share: the raw output from the per-level maps, and gfldet's head members for the exporter."""

    num_classes: int
    reg_max: int
    num_anchors = 1  # one point prior per location
    quality_channels = 0  # the joint class-quality score: no quality branch

    @property
    def box_channels(self) -> int:
        return 4 * (self.reg_max + 1)

    def forward_levels(self, feats: Sequence[Tensor]) -> list[Tensor]:  # pragma: no cover - each head defines it
        raise NotImplementedError

    def forward(self, feats: Sequence[Tensor]) -> Tensor:
        return _flatten_levels(self.forward_levels(feats))

    @staticmethod
    def flatten(maps: Sequence[Tensor]) -> Tensor:
        """Per level ``(N, K, H_l, W_l)`` -> ``(N, A, K)``."""
        return _flatten_levels(maps)

    def split(self, cls_logits: Sequence[Tensor], reg_outputs: Sequence[Tensor]) -> tuple[Tensor, Tensor, None]:
        """Per-level class logits and distribution logits -> ``cls (N, A, C)``, ``box (N, A, 4 (R + 1))``, no quality."""
        return self.flatten(cls_logits), self.flatten(reg_outputs), None


class NanoDetPlusHead(_LevelHead):
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

    def forward_levels(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Per level ``(N, C + 4 (R + 1), H_l, W_l)``."""
        outputs = []
        for x, tower, out_conv in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in tower:
                x = conv(x)
            outputs.append(out_conv(x))
        return outputs


class NanoDetHead(_LevelHead):
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

    def forward_levels(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Per level ``(N, C + 4 (R + 1), H_l, W_l)``."""
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
        return outputs


class SimpleConvHead(_LevelHead):
    """NanoDet-Plus's auxiliary head (the official ``SimpleConvHead``; see the module docstring). Its input is the
    concatenation of the neck's and the auxiliary neck's maps (twice the neck's width)."""

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 192, stacked_convs: int = 4,
                 strides: Sequence[int] = (8, 16, 32, 64), reg_max: int = 7, activation: str = "LeakyReLU"):
        super().__init__()
        self.num_classes, self.reg_max, self.strides = num_classes, reg_max, tuple(strides)
        self.cls_convs = nn.ModuleList([ConvGNAct(in_channels if i == 0 else feat_channels, feat_channels,
                                                  activation=activation) for i in range(stacked_convs)])
        self.reg_convs = nn.ModuleList([ConvGNAct(in_channels if i == 0 else feat_channels, feat_channels,
                                                  activation=activation) for i in range(stacked_convs)])
        self.gfl_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])

    def forward_levels(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """Per level ``(N, C + 4 (R + 1), H_l, W_l)``."""
        outputs = []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            outputs.append(torch.cat([self.gfl_cls(cls_feat), scale(self.gfl_reg(reg_feat)).float()], dim=1))
        return outputs
