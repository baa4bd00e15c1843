"""The GFL head: class and box towers of 3x3 conv + GroupNorm + ReLU, their output convolutions, a scale per level.

GFL's joint class-quality classifier and distribution regressor (``4 * (n + 1)`` logits per location); also with
``A`` anchors per location, another box representation's channels and a quality branch (GFLV2's DGQP, the
ablations' centerness / IoU branches: gfldet.models.branches)."""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..errors import GfldetError
from .branches import ConvBranch

__all__ = ["GFLHead", "Scale", "ConvGN", "DWSepConvGN", "TOWER_LAYERS"]


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


class DWSepConvGN(nn.Module):
    """Depthwise-separable form of :class:`ConvGN` for light heads: a depthwise 3x3 convolution, a pointwise 1x1
    convolution (neither with bias), GroupNorm, ReLU; about ``9 / out_ch + 1 / 9`` of a full 3x3 layer's work (the
    light towers NanoDet uses; GroupNorm kept, as GFL's head has it)."""

    def __init__(self, in_ch: int, out_ch: int, gn_groups: int):
        super().__init__()
        self.depthwise = nn.Conv2d(in_ch, in_ch, 3, padding=1, groups=in_ch, bias=False)
        self.pointwise = nn.Conv2d(in_ch, out_ch, 1, bias=False)
        self.gn = _GroupNorm(gn_groups, out_ch)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.gn(self.pointwise(self.depthwise(x))))


# ModelConfig.head_conv -> the layer of the head's towers
TOWER_LAYERS: dict[str, type[nn.Module]] = {"conv": ConvGN, "dwsep": DWSepConvGN}


class GFLHead(nn.Module):
    """Per level: ``(N, in_channels, H, W)`` -> class logits ``(N, A*C, H, W)`` and box outputs
    ``(N, A*K + A*Q, H, W)``: the ``A*K`` box channels (anchor-major; GFL: A = 1, K = 4 (n + 1) distribution
    logits), multiplied by the level's ``Scale``, then ``Q`` quality-branch logits per anchor (Q = 0 for GFL).

    The branch is built by ``quality_branch(feat_channels, num_anchors)`` (a quality estimator's ``branch``) and
    called as ``branch(reg_feat, box)`` on the regression tower's features and the scaled box outputs; without
    a factory, ``quality_channels > 0`` gives a 3x3 convolution on the regression tower (the ATSS / FCOS
    centerness branch)."""

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
        box_channels: int | None = None,
        num_anchors: int = 1,
        quality_channels: int = 0,
        quality_branch: Callable[[int, int], nn.Module | None] | None = None,
        tower_layer: Callable[[int, int, int], nn.Module] = ConvGN,
    ):
        super().__init__()
        if num_classes < 1:
            raise GfldetError(f"num_classes must be >= 1, got {num_classes}")
        if feat_channels % gn_groups:
            raise GfldetError(f"head channels ({feat_channels}) must be divisible by GroupNorm groups ({gn_groups})")
        self.num_classes, self.reg_max = num_classes, reg_max
        self.num_anchors, self.quality_channels = num_anchors, quality_channels
        self.box_channels = 4 * (reg_max + 1) if box_channels is None else box_channels
        chans = [in_channels] + [feat_channels] * stacked_convs
        self.cls_convs = nn.ModuleList(tower_layer(chans[i], chans[i + 1], gn_groups) for i in range(stacked_convs))
        self.reg_convs = nn.ModuleList(tower_layer(chans[i], chans[i + 1], gn_groups) for i in range(stacked_convs))
        self.gfl_cls = nn.Conv2d(chans[-1], num_anchors * num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(chans[-1], num_anchors * self.box_channels, 3, padding=1)
        self.scales = nn.ModuleList(Scale(1.0) for _ in range(num_levels))
        if quality_branch is None:
            quality_branch = lambda feat, a: ConvBranch(feat, a * quality_channels) if quality_channels else None  # noqa: E731
        self.gfl_quality = quality_branch(chans[-1], num_anchors)
        if (self.gfl_quality is None) != (quality_channels == 0):
            raise ValueError(f"quality_channels={quality_channels} needs a quality branch (and 0 none)")
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
        reg = self.scales[level](self.gfl_reg(reg_feat)).float()
        if self.gfl_quality is not None:
            reg = torch.cat([reg, self.gfl_quality(reg_feat, reg).float()], dim=1)
        return self.gfl_cls(cls_feat), reg

    def forward(self, feats: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        if len(feats) != len(self.scales):
            raise ValueError(f"head built for {len(self.scales)} levels got {len(feats)} feature maps")
        outs = [self.forward_level(f, i) for i, f in enumerate(feats)]
        return [o[0] for o in outs], [o[1] for o in outs]

    def flatten(self, maps: Sequence[Tensor]) -> Tensor:
        """Per level ``(N, A_l*K, H, W)`` -> ``(N, A, K)``, priors location-major then anchor (row-major per level)."""
        a = self.num_anchors
        return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, m.shape[1] // a) for m in maps], dim=1)

    def split(self, cls_logits: Sequence[Tensor], reg_outputs: Sequence[Tensor]) -> tuple[Tensor, Tensor, Tensor | None]:
        """Per-level outputs -> ``cls (N, A, C)``, ``box (N, A, K)`` and ``quality (N, A)`` logits (None: no branch)."""
        if not self.quality_channels:
            return self.flatten(cls_logits), self.flatten(reg_outputs), None
        n = self.num_anchors * self.box_channels
        quality = self.flatten([m[:, n:] for m in reg_outputs])[..., 0]
        return self.flatten(cls_logits), self.flatten([m[:, :n] for m in reg_outputs]), quality
