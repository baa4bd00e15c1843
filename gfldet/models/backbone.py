"""ResNet / ResNeXt backbones (torchvision) and the FPN neck with P3-P7 outputs.

Parameter names follow torchvision's ResNet, which are also mmdetection's ``backbone.*`` names, so
checkpoints of either map one to one. The forward here is the plain one; the CPU fast path (BatchNorm folded into
fused convolutions, channels_last) is swapped in by gfldet.models.fusion.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from ..errors import GfldetError
from .dcn import ModulatedDeformConv2d, deformable_conv

__all__ = ["ResNetBackbone", "FPN", "FrozenStatsBatchNorm2d", "RESNET_SPECS"]

log = logging.getLogger(__name__)

# depth -> (block, blocks per stage)
RESNET_SPECS: dict[int, tuple[type[nn.Module], list[int]]] = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}


class FrozenStatsBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm that always normalises with its running statistics and never updates them.

    This is mmdetection's ``norm_eval=True``: the statistics are frozen, while the affine weight and bias
    stay trainable unless their stage is frozen (torchvision's FrozenBatchNorm2d freezes those too).
    """

    def train(self, mode: bool = True):  # noqa: D102 - stays in eval mode
        return super().train(False)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet/ResNeXt returning the C3, C4, C5 feature maps (strides 8, 16, 32).

    Args:
        depth: 18, 34, 50, 101 or 152.
        groups, width_per_group: ResNeXt cardinality and width (32, 4 for ResNeXt-101 32x4d).
        frozen_stages: stages whose parameters are frozen: 0 none, 1 the stem and ``layer1`` (the
            reference's default), up to 4.
        norm_eval: BatchNorm with frozen running statistics (True, the reference) or ordinary BatchNorm that
            uses batch statistics in training mode (False, for training from scratch).
        base_channels: output channels of the stem and the planes of ``layer1``, doubled by each later stage
            (mmdetection's ``base_channels``). 64 is the standard ResNet, whose ImageNet weights fit; 32 gives a
            network with a quarter of the convolution work, for training small models from scratch.
        stage_with_dcn: per stage (layer1..layer4), whether the 3x3 ``conv2`` of each of its bottlenecks is a
            deformable convolution (:class:`~gfldet.models.dcn.ModulatedDeformConv2d`, mmdetection's DCNv2, or with
            ``dcn_modulated=False`` :class:`~gfldet.models.dcn.DeformConv2d`, its DCNv1,
            with ``fallback_on_stride=False``) with ``deform_groups`` offset groups. Its main weight keeps the name
            ``conv2.weight``; the offsets and mask come from ``conv2.conv_offset`` (zero at first).
    """

    def __init__(self, depth: int = 50, groups: int = 1, width_per_group: int = 64, frozen_stages: int = 1,
                 norm_eval: bool = True, base_channels: int = 64,
                 stage_with_dcn: Sequence[bool] = (False, False, False, False), deform_groups: int = 1,
                 dcn_modulated: bool = True):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise GfldetError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        block, layers = RESNET_SPECS[depth]
        if block is tv_resnet.BasicBlock and (groups != 1 or width_per_group != 64):
            raise GfldetError(f"ResNet-{depth} has basic blocks, which do not support groups/width_per_group")
        if not isinstance(base_channels, int) or isinstance(base_channels, bool) or base_channels < 1:
            raise GfldetError(f"base_channels must be a positive integer, got {base_channels!r}")
        if groups != 1 and base_channels != 64:
            # torchvision sizes grouped blocks as planes * width_per_group / 64 * groups, mmdetection's ResNeXt
            # relative to base_channels: the two would disagree, so narrow ResNeXts are not offered
            raise GfldetError(f"base_channels={base_channels} is for ResNets (groups=1), got groups={groups}")
        stage_with_dcn = tuple(bool(b) for b in stage_with_dcn)
        if len(stage_with_dcn) != 4:
            raise GfldetError(f"stage_with_dcn must hold 4 booleans (layer1..layer4), got {stage_with_dcn}")
        if any(stage_with_dcn) and block is tv_resnet.BasicBlock:  # as mmdetection's BasicBlock: not implemented
            raise GfldetError(f"deformable convolutions (stage_with_dcn={stage_with_dcn}) need bottleneck blocks "
                              f"(depth 50, 101 or 152); ResNet-{depth} has basic blocks")
        norm_layer = FrozenStatsBatchNorm2d if norm_eval else nn.BatchNorm2d
        net = tv_resnet.ResNet(block, layers, groups=groups, width_per_group=width_per_group, norm_layer=norm_layer)
        if base_channels != 64:
            # torchvision's ResNet has the standard widths built in: rebuild the stem and the four stages with
            # its own layer builder (which reads the input width from net.inplanes), then initialise them the
            # way its constructor does (Kaiming-normal convolutions, unit BatchNorm)
            net.inplanes = base_channels
            net.conv1 = nn.Conv2d(3, base_channels, kernel_size=7, stride=2, padding=3, bias=False)
            net.bn1 = norm_layer(base_channels)
            net.layer1 = net._make_layer(block, base_channels, layers[0])
            for i in range(1, 4):
                setattr(net, f"layer{i + 1}", net._make_layer(block, base_channels * 2**i, layers[i], stride=2))
            for m in net.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)
        self.depth, self.groups, self.width_per_group, self.base_channels = depth, groups, width_per_group, base_channels
        for on, layer in zip(stage_with_dcn, (net.layer1, net.layer2, net.layer3, net.layer4)):
            for blk in layer if on else ():  # the DCN takes over the initialised conv2 weight
                blk.conv2 = deformable_conv(blk.conv2, deform_groups, dcn_modulated)
        self.stage_with_dcn, self.deform_groups = stage_with_dcn, deform_groups
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = block.expansion
        self.out_channels = [base_channels * 2**i * expansion for i in (1, 2, 3)]
        self.frozen_stages = frozen_stages
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        stages = [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]
        return [m for stage in (stages[: self.frozen_stages + 1] if self.frozen_stages > 0 else []) for m in stage]

    def _freeze(self) -> None:
        for m in self._frozen_modules():
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True):  # noqa: D102 - frozen stages keep their BatchNorm statistics
        super().train(mode)
        for m in self._frozen_modules():
            m.eval()
        return self

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats[1:]

    def load_torchvision_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load an ImageNet classification state dict (its ``fc.*`` entries are dropped). Deformable convolutions'
        ``conv_offset`` parameters, which classification networks lack, keep their zeros (as in mmdetection)."""
        if self.base_channels != 64:
            raise GfldetError(f"ImageNet weights are for the standard widths (base_channels=64), this backbone has "
                              f"base_channels={self.base_channels}")
        sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        missing = [k for k in missing if ".conv_offset." not in k or not isinstance(self.get_submodule(k.rsplit(".", 2)[0]),
                                                                                   ModulatedDeformConv2d)]
        if missing or unexpected:
            raise GfldetError(f"backbone weights do not fit ResNet-{self.depth}: missing {missing[:5]}, unexpected {unexpected[:5]}")


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017) over C3-C5 with two extra levels, giving P3-P7.

    Lateral 1x1 and output 3x3 convs with bias; nearest-neighbour top-down upsampling to the exact size of
    the finer map; P6 is a stride-2 3x3 conv on the P5 *output* and P7 a stride-2 3x3 conv on P6, without a
    ReLU between (the reference's ``add_extra_convs='on_output'``, ``relu_before_extra_convs=False``).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5):
        super().__init__()
        if num_outs < len(in_channels):
            raise GfldetError(f"num_outs ({num_outs}) must be >= the number of inputs ({len(in_channels)})")
        self.lateral_convs = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        convs = [nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_channels]
        convs += [nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_outs - len(in_channels))]
        self.fpn_convs = nn.ModuleList(convs)
        self.out_channels = out_channels
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the reference initialises FPN convs with Xavier-uniform
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [self.fpn_convs[i](lat) for i, lat in enumerate(laterals)]
        for conv in self.fpn_convs[len(laterals):]:
            outs.append(conv(outs[-1]))
        return outs
