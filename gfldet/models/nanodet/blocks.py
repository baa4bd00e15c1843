"""The convolution blocks NanoDet is built from, with the attribute names of the official code (RangiLyu/nanodet), so
that its state dict loads by name (gfldet.models.nanodet.checkpoint).

- :class:`ConvNormAct`: conv, then BatchNorm ``bn`` (optional), then the activation ``act`` (optional); the bias
  exists only without a norm.
- :class:`DepthwiseSeparable`: ``depthwise`` k x k conv, ``dwnorm``, activation, ``pointwise`` 1x1 conv, ``pwnorm``,
  the same activation again.
- :class:`GhostModule`, :class:`GhostBottleneck`, :class:`GhostBlocks`: GhostNet's cheap-feature module (Han et al.
  2020) as GhostPAN stacks it: half the output channels from a 1x1 conv, the other half from a depthwise conv of
  those, concatenated.

Activation: LeakyReLU with slope 0.1 (NanoDet's "LeakyReLU"), or None. Shapes: (N, C, H, W) throughout.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ...errors import GfldetError
from ..head import ConvGN

__all__ = ["make_activation", "ConvNormAct", "ConvGNAct", "DepthwiseSeparable", "GhostModule", "GhostBottleneck",
           "GhostBlocks"]

LEAKY_SLOPE = 0.1  # NanoDet's LeakyReLU, not PyTorch's default 0.01


def make_activation(name: str | None) -> nn.Module:
    """``"LeakyReLU"`` (slope 0.1), ``"ReLU"`` or None (identity)."""
    if name is None:
        return nn.Identity()
    if name == "LeakyReLU":
        return nn.LeakyReLU(LEAKY_SLOPE)
    if name == "ReLU":
        return nn.ReLU()
    raise GfldetError(f"activation {name!r} is not supported here: use 'LeakyReLU', 'ReLU' or None")


class ConvNormAct(nn.Module):
    """``conv`` -> ``bn`` (if ``norm``) -> ``act`` (if ``activation``). The conv has a bias only without a norm."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm: bool = True, activation: str | None = "LeakyReLU"):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, bias=not norm)
        self.bn = nn.BatchNorm2d(out_channels) if norm else None
        self.act = make_activation(activation) if activation else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return x if self.act is None else self.act(x)


class ConvGNAct(ConvGN):
    """gfldet's head layer :class:`~gfldet.models.head.ConvGN` (3x3 conv without bias, GroupNorm ``gn``) with
    NanoDet's activation: the official ConvModule with a GN norm config, as NanoDet-Plus's auxiliary head builds it
    (32 groups). Not fused by the CPU fast path (which swaps exactly ConvGN)."""

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 32, activation: str | None = "LeakyReLU"):
        if out_channels % num_groups:
            raise GfldetError(f"GroupNorm with {num_groups} groups needs a channel count divisible by it, got {out_channels}")
        super().__init__(in_channels, out_channels, num_groups)
        self.act = make_activation(activation)


class DepthwiseSeparable(nn.Module):
    """``depthwise`` (k x k, groups = channels) -> ``dwnorm`` -> act -> ``pointwise`` (1x1) -> ``pwnorm`` -> act."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 activation: str | None = "LeakyReLU"):
        super().__init__()
        self.depthwise = nn.Conv2d(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels,
                                   bias=False)
        self.dwnorm = nn.BatchNorm2d(in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pwnorm = nn.BatchNorm2d(out_channels)
        self.act = make_activation(activation)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, kernel_size, 1, kernel_size // 2, groups=groups, bias=False),
            nn.BatchNorm2d(out_channels)]


class GhostModule(nn.Module):
    """``ceil(out / 2)`` channels from ``primary_conv`` (1x1 conv, BN, act) and as many from ``cheap_operation`` (3x3
    depthwise conv of those, BN, act), concatenated: GhostNet's ratio 2. Like the official module it returns
    ``2 * ceil(out / 2)`` channels (NanoDet's channel counts are even, so ``out``)."""

    def __init__(self, in_channels: int, out_channels: int, activation: str | None = "LeakyReLU"):
        super().__init__()
        init_channels = math.ceil(out_channels / 2)
        act = [make_activation(activation)] if activation else []
        self.primary_conv = nn.Sequential(*_conv_bn(in_channels, init_channels, 1), *act)
        self.cheap_operation = nn.Sequential(*_conv_bn(init_channels, init_channels, 3, groups=init_channels),
                                             *([make_activation(activation)] if activation else []))

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """Ghost bottleneck with stride 1 and no squeeze-excitation (the only form GhostPAN uses): ``ghost1`` (with
    activation) -> ``ghost2`` (linear), plus the ``shortcut``: identity when the channels match, else a ``dw_kernel``
    depthwise conv + BN, 1x1 conv + BN."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, dw_kernel: int = 3,
                 activation: str | None = "LeakyReLU"):
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, activation)
        self.ghost2 = GhostModule(mid_channels, out_channels, None)
        if in_channels == out_channels:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(*_conv_bn(in_channels, in_channels, dw_kernel, groups=in_channels),
                                          *_conv_bn(in_channels, out_channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.ghost2(self.ghost1(x)) + self.shortcut(x)


class GhostBlocks(nn.Module):
    """``num_blocks`` ghost bottlenecks in ``blocks`` (GhostPAN's fusion after each concatenation); NanoDet-Plus uses
    one, with ``expand`` 1 and no residual reduce conv."""

    def __init__(self, in_channels: int, out_channels: int, expand: float = 1, kernel_size: int = 5,
                 num_blocks: int = 1, activation: str | None = "LeakyReLU"):
        super().__init__()
        if num_blocks < 1:
            raise GfldetError(f"GhostBlocks needs num_blocks >= 1, got {num_blocks}")
        mid = int(out_channels * expand)
        # every block maps in_channels -> out_channels, as the official code builds them (so more than one block only
        # works when in_channels == out_channels there too)
        self.blocks = nn.Sequential(*[GhostBottleneck(in_channels, mid, out_channels, kernel_size, activation)
                                      for _ in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
