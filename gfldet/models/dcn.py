"""Deformable convolutions on torchvision's ``deform_conv2d``, laid out as mmcv's so that mmdetection's DCN
checkpoints load one to one: modulated (DCNv2, Zhu et al. 2019; mmcv's ``ModulatedDeformConv2dPack``, config type
``'DCNv2'``) and plain (DCNv1, Dai et al. 2017; mmcv's ``DeformConv2dPack``, type ``'DCN'``, which mmdetection's
published GFL DCN models use)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

from ..errors import GfldetError

__all__ = ["ModulatedDeformConv2d", "DeformConv2d", "deformable_conv"]


class ModulatedDeformConv2d(nn.Module):
    """A convolution whose kernel taps are shifted by learnt offsets and scaled by a learnt mask (DCNv2).

    The layout is mmcv's ``ModulatedDeformConv2dPack``, whose parameters are (``kh x kw`` kernel, ``G`` deform
    groups):

    * ``weight`` ``(out, in / groups, kh, kw)`` and ``bias`` (optional): the main convolution, the same shapes as a
      plain ``nn.Conv2d`` (``groups`` > 1 for ResNeXt);
    * ``conv_offset``: a plain convolution with the same kernel, stride, padding and dilation, ``G * 3 * kh * kw``
      outputs and a bias, both initialised to zero (a fresh module samples the regular grid with mask
      ``sigmoid(0) = 0.5``: half the plain convolution, as mmcv's; ImageNet weights leave it so). Its output is
      split in three equal chunks ``o1, o2, m`` along the channels; the offsets are ``cat(o1, o2)`` (``2 * G * kh * kw``
      channels: per group and tap a (dy, dx) pair, as ``deform_conv2d`` reads them) and the mask is ``sigmoid(m)``.
    """

    channels_per_tap = 3  # conv_offset outputs per deform group and kernel tap: (dy, dx) and a mask logit

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 dilation: int = 1, groups: int = 1, deform_groups: int = 1, bias: bool = False):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise GfldetError(f"channels ({in_channels} in, {out_channels} out) must be divisible by groups={groups}")
        if deform_groups < 1 or in_channels % deform_groups:
            raise GfldetError(f"deform_groups={deform_groups} must be >= 1 and divide the {in_channels} input channels")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size = (kernel_size, kernel_size)
        self.stride, self.padding, self.dilation = (stride, stride), (padding, padding), (dilation, dilation)
        self.groups, self.deform_groups = groups, deform_groups
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)  # nn.Conv2d's default
        self.conv_offset = nn.Conv2d(in_channels, deform_groups * self.channels_per_tap * kernel_size * kernel_size, kernel_size,
                                     stride=stride, padding=padding, dilation=dilation, bias=True)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, deform_groups: int = 1) -> "ModulatedDeformConv2d":
        """A DCN in place of the square, zero-padded ``conv``, sharing its weight (and bias) parameters."""
        k, s, p, d = conv.kernel_size[0], conv.stride[0], conv.padding[0], conv.dilation[0]
        if (conv.kernel_size, conv.stride, conv.padding, conv.dilation) != ((k, k), (s, s), (p, p), (d, d)) \
                or conv.padding_mode != "zeros":
            raise GfldetError(f"only square, zero-padded convolutions can be made deformable, got {conv}")
        dcn = cls(conv.in_channels, conv.out_channels, k, s, p, d, conv.groups, deform_groups, bias=conv.bias is not None)
        dcn.weight = conv.weight
        if conv.bias is not None:
            dcn.bias = conv.bias
        return dcn

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """The offsets ``(N, 2 * G * kh * kw, H', W')`` and mask ``(N, G * kh * kw, H', W')`` for input ``x``."""
        o1, o2, m = torch.chunk(self.conv_offset(x), 3, dim=1)
        return torch.cat((o1, o2), dim=1), torch.sigmoid(m)

    def forward(self, x: Tensor) -> Tensor:
        offset, mask = self.offset_and_mask(x)
        return deform_conv2d(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=mask)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, "
                f"deform_groups={self.deform_groups}, bias={self.bias is not None}")


class DeformConv2d(ModulatedDeformConv2d):
    """DCNv1 in mmcv's ``DeformConv2dPack`` layout: ``conv_offset`` gives ``G * 2 * kh * kw`` offsets (zero-initialised),
    used as they are, and no mask (every tap weighs 1: a fresh module is the plain convolution)."""

    channels_per_tap = 2

    def offset_and_mask(self, x: Tensor) -> tuple[Tensor, None]:
        return self.conv_offset(x), None


def deformable_conv(conv: nn.Conv2d, deform_groups: int = 1, modulated: bool = True) -> ModulatedDeformConv2d:
    """A deformable convolution in place of ``conv`` (sharing its weights): DCNv2 (``modulated``) or DCNv1."""
    return (ModulatedDeformConv2d if modulated else DeformConv2d).from_conv(conv, deform_groups)
