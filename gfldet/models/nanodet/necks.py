"""NanoDet's necks: GhostPAN (NanoDet-Plus) and the parameter-free-fusion PAN of the legacy NanoDet.

Both follow the official code at the commit recorded in docs/nanodet.md operation for operation (the order of the
additions and concatenations, bilinear resampling with ``align_corners=False``), with its attribute names.

Shapes: level l of L inputs is (N, C_l, H_l, W_l), each level half the size of the one before.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...errors import GfldetError
from .blocks import ConvNormAct, DepthwiseSeparable, GhostBlocks

__all__ = ["GhostPAN", "LegacyPAN"]


class GhostPAN(nn.Module):
    """Path aggregation with ghost blocks (NanoDet-Plus).

    1x1 ``reduce_layers`` bring every input to ``out_channels``; top-down, the coarser map is upsampled 2x
    (bilinear), concatenated ``[upsampled, finer]`` and fused by a ``top_down_blocks`` ghost block; bottom-up, the
    finer output goes through a stride-2 ``downsamples`` conv, is concatenated ``[downsampled, top-down map]`` and
    fused by a ``bottom_up_blocks`` ghost block. Each of the ``num_extra_level`` extra levels (P6 for NanoDet-Plus) is
    ``extra_lvl_in_conv(last reduced input) + extra_lvl_out_conv(last output)``, both stride-2 convs.
    Convs are depthwise-separable (``use_depthwise``) or plain k x k ConvNormAct.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int, use_depthwise: bool = True,
                 kernel_size: int = 5, expand: float = 1, num_blocks: int = 1, num_extra_level: int = 1,
                 activation: str = "LeakyReLU"):
        super().__init__()
        if num_extra_level < 0:
            raise GfldetError(f"num_extra_level must be >= 0, got {num_extra_level}")
        self.in_channels, self.out_channels = list(in_channels), out_channels
        n = len(self.in_channels)

        def down() -> nn.Module:
            if use_depthwise:
                return DepthwiseSeparable(out_channels, out_channels, kernel_size, 2, kernel_size // 2, activation)
            return ConvNormAct(out_channels, out_channels, kernel_size, 2, kernel_size // 2, True, activation)

        def fuse() -> nn.Module:
            return GhostBlocks(2 * out_channels, out_channels, expand, kernel_size, num_blocks, activation)

        self.reduce_layers = nn.ModuleList([ConvNormAct(c, out_channels, 1, activation=activation)
                                            for c in self.in_channels])
        self.top_down_blocks = nn.ModuleList([fuse() for _ in range(n - 1)])
        self.downsamples = nn.ModuleList([down() for _ in range(n - 1)])
        self.bottom_up_blocks = nn.ModuleList([fuse() for _ in range(n - 1)])
        self.extra_lvl_in_conv = nn.ModuleList([down() for _ in range(num_extra_level)])
        self.extra_lvl_out_conv = nn.ModuleList([down() for _ in range(num_extra_level)])

    @staticmethod
    def upsample(x: Tensor) -> Tensor:
        # nn.Upsample(scale_factor=2, mode="bilinear") as the official module
        return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)

    def forward(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"GhostPAN expects {len(self.in_channels)} levels, got {len(inputs)}")
        feats = [reduce(x) for x, reduce in zip(inputs, self.reduce_layers)]
        n = len(feats)
        # top-down: inner[l] for l = n-1 .. 0
        inner = [feats[-1]]
        for k, l in enumerate(range(n - 1, 0, -1)):
            inner.insert(0, self.top_down_blocks[k](torch.cat([self.upsample(inner[0]), feats[l - 1]], 1)))
        # bottom-up
        outs = [inner[0]]
        for l in range(n - 1):
            outs.append(self.bottom_up_blocks[l](torch.cat([self.downsamples[l](outs[-1]), inner[l + 1]], 1)))
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(conv_in(feats[-1]) + conv_out(outs[-1]))
        return outs


class LegacyPAN(nn.Module):
    """The legacy NanoDet's PAN: 1x1 ``lateral_convs`` (with bias, no norm, no activation) to ``out_channels``; a
    top-down pass adds each coarser level, upsampled 2x (bilinear), to the finer one; a bottom-up pass adds each finer
    level, downsampled 0.5x (bilinear), to the coarser one. No convolution after the fusion."""

    def __init__(self, in_channels: Sequence[int], out_channels: int):
        super().__init__()
        self.in_channels, self.out_channels = list(in_channels), out_channels
        self.lateral_convs = nn.ModuleList([ConvNormAct(c, out_channels, 1, norm=False, activation=None)
                                            for c in self.in_channels])

    def forward(self, inputs: Sequence[Tensor]) -> list[Tensor]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"LegacyPAN expects {len(self.in_channels)} levels, got {len(inputs)}")
        x = [conv(f) for f, conv in zip(inputs, self.lateral_convs)]
        for l in range(len(x) - 1, 0, -1):
            x[l - 1] = x[l - 1] + F.interpolate(x[l], scale_factor=2.0, mode="bilinear", align_corners=False)
        for l in range(len(x) - 1):
            x[l + 1] = x[l + 1] + F.interpolate(x[l], scale_factor=0.5, mode="bilinear", align_corners=False)
        return x
