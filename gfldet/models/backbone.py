"""ResNet / ResNeXt backbones (torchvision) and the FPN neck with P3-P7 outputs.

Parameter names follow torchvision's ResNet, which are also mmdetection's ``backbone.*`` names, so
checkpoints of either map one to one.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import resnet as tv_resnet

from gfldet.models import fast_conv

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
    """

    def __init__(self, depth: int = 50, groups: int = 1, width_per_group: int = 64, frozen_stages: int = 1,
                 norm_eval: bool = True, base_channels: int = 64):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        block, layers = RESNET_SPECS[depth]
        if block is tv_resnet.BasicBlock and (groups != 1 or width_per_group != 64):
            raise ValueError(f"ResNet-{depth} has basic blocks, which do not support groups/width_per_group")
        if not isinstance(base_channels, int) or isinstance(base_channels, bool) or base_channels < 1:
            raise ValueError(f"base_channels must be a positive integer, got {base_channels!r}")
        if groups != 1 and base_channels != 64:
            # torchvision sizes grouped blocks as planes * width_per_group / 64 * groups, mmdetection's ResNeXt
            # relative to base_channels: the two would disagree, so narrow ResNeXts are not offered
            raise ValueError(f"base_channels={base_channels} is for ResNets (groups=1), got groups={groups}")
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
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = block.expansion
        self.out_channels = [base_channels * 2**i * expansion for i in (1, 2, 3)]
        self.frozen_stages = frozen_stages
        self._freeze()
        # Speed (docs/speed.md). channels_last: activations in NHWC, which oneDNN convolves ~20% faster on CPU
        # than NCHW; conv outputs differ from NCHW's in the last bits (~1e-6 relative), like any other conv
        # algorithm choice. fuse_frozen_bn: where no gradient flows through a block (inference, and the frozen
        # stem and layer1 in training), convolve with BatchNorm folded into the weights and the ReLU / residual
        # addition fused into the convolution; same function, float rounding differs by ~1e-6 relative.
        self.channels_last = True
        self.fuse_frozen_bn = True
        # Training with frozen statistics (norm_eval): each BatchNorm is a per-channel affine map, folded into its
        # convolution's weight and bias inside the autograd graph (gradients reach conv, gamma and beta as before);
        # saves BatchNorm's forward, backward and saved activations. Same function, rounding differs ~1e-6.
        self.fold_frozen_bn_train = True

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
        # Traced (torch.export / ONNX, torch.compile, jit): the plain NCHW modules. channels_last would make the
        # tracer guard on the batch size (a size-1 dim has ambiguous strides) and the fused path cannot be traced.
        # channels_last only where no gradient flows: on this CPU oneDNN's NHWC convolution forward is faster, but
        # its backward is ~1.5x slower than NCHW's (docs/speed.md), so trainable blocks get NCHW activations.
        traced = fast_conv.tracing()
        if self.channels_last and not traced:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.fuse_frozen_bn and fast_conv.foldable(x, (self.conv1, self.bn1)):
            x = fast_conv.conv2d(self.conv1, x, self.bn1, relu=True)
        else:
            x = self.relu(self.bn1(self.conv1(self._grad_layout(x))))
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                if self.fuse_frozen_bn and fast_conv.foldable(x, (block,)):
                    x = _block_as_convs(block, x, _fused_conv_bn)
                elif self.fold_frozen_bn_train and not traced and _frozen_stats(block) and not fast_conv.plain_only((block,)):
                    x = _block_as_convs(block, self._grad_layout(x), _affine_conv_bn)
                else:
                    x = block(self._grad_layout(x))
            feats.append(x)
        return feats[1:]

    @staticmethod
    def _grad_layout(x: Tensor) -> Tensor:
        """NCHW for modules that record an autograd graph (see forward); unchanged otherwise."""
        return x.contiguous() if torch.is_grad_enabled() and not torch.is_inference_mode_enabled() else x

    def load_torchvision_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load an ImageNet classification state dict (its ``fc.*`` entries are dropped)."""
        if self.base_channels != 64:
            raise ValueError(f"ImageNet weights are for the standard widths (base_channels=64), this backbone has "
                             f"base_channels={self.base_channels}")
        sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"backbone weights do not fit ResNet-{self.depth}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _frozen_stats(block: nn.Module) -> bool:
    """Every BatchNorm in ``block`` normalises with its running statistics (eval mode)."""
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return bool(bns) and not any(m.training for m in bns)


def _conv_affine(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor) -> Tensor:
    """``bn(conv(x))`` for an eval-mode ``bn``, as one convolution with folded weights, differentiable in the
    conv weight and bn's weight and bias (``a = gamma / sqrt(var + eps)``, ``b = beta - mean * a``)."""
    a = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * a
    if conv.bias is not None:
        b = b + conv.bias * a
    return F.conv2d(x, conv.weight * a.reshape(-1, 1, 1, 1), b, conv.stride, conv.padding, conv.dilation, conv.groups)


def _affine_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor, relu: bool = False, residual: Tensor | None = None) -> Tensor:
    """``relu?(bn(conv(x)) [+ residual])`` through :func:`_conv_affine` (differentiable; training)."""
    y = _conv_affine(conv, bn, x)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


def _fused_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor, relu: bool = False, residual: Tensor | None = None) -> Tensor:
    """The same through gfldet.models.fast_conv (no autograd; inference and frozen stages)."""
    return fast_conv.conv2d(conv, x, bn, relu=relu, residual=residual)


def _block_as_convs(block: nn.Module, x: Tensor, conv_bn) -> Tensor:
    """A torchvision Bottleneck / BasicBlock with eval-mode BatchNorm as a chain of ``conv_bn(conv, bn, x, relu,
    residual)`` calls (BatchNorm folded into each convolution, the residual addition and ReLU into the last)."""
    ds = block.downsample
    if ds is not None and not (
        isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d) and isinstance(ds[1], nn.BatchNorm2d)
    ):
        return block(x)
    identity = conv_bn(ds[0], ds[1], x) if ds is not None else x
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, tv_resnet.Bottleneck):
        pairs.append((block.conv3, block.bn3))
    out = x
    for conv, bn in pairs[:-1]:
        out = conv_bn(conv, bn, out, relu=True)
    return conv_bn(*pairs[-1], out, relu=True, residual=identity)


class FPN(nn.Module):
    """Feature pyramid (Lin et al. 2017) over C3-C5 with two extra levels, giving P3-P7.

    Lateral 1x1 and output 3x3 convs with bias; nearest-neighbour top-down upsampling to the exact size of
    the finer map; P6 is a stride-2 3x3 conv on the P5 *output* and P7 a stride-2 3x3 conv on P6, without a
    ReLU between (the reference's ``add_extra_convs='on_output'``, ``relu_before_extra_convs=False``).
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_outs: int = 5):
        super().__init__()
        if num_outs < len(in_channels):
            raise ValueError(f"num_outs ({num_outs}) must be >= the number of inputs ({len(in_channels)})")
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
        if fast_conv.usable(feats, (self,)):
            return self._forward_fast(feats)
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [self.fpn_convs[i](lat) for i, lat in enumerate(laterals)]
        for conv in self.fpn_convs[len(laterals):]:
            outs.append(conv(outs[-1]))
        return outs

    def _forward_fast(self, feats: Sequence[Tensor]) -> list[Tensor]:
        """forward() with gfldet.models.fast_conv: the top-down addition fused into the lateral convolutions
        (same additions in the same order, so the same rounding)."""
        n = len(feats)
        laterals: list[Tensor] = [None] * n  # type: ignore[list-item]
        laterals[-1] = fast_conv.conv2d(self.lateral_convs[-1], feats[-1])
        for i in range(n - 1, 0, -1):
            up = F.interpolate(laterals[i], size=feats[i - 1].shape[-2:], mode="nearest")
            laterals[i - 1] = fast_conv.conv2d(self.lateral_convs[i - 1], feats[i - 1], residual=up)
        outs = [fast_conv.conv2d(self.fpn_convs[i], lat) for i, lat in enumerate(laterals)]
        for conv in self.fpn_convs[n:]:
            outs.append(fast_conv.conv2d(conv, outs[-1]))
        return outs
