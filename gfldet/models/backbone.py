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
    """

    def __init__(self, depth: int = 50, groups: int = 1, width_per_group: int = 64, frozen_stages: int = 1,
                 norm_eval: bool = True):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        block, layers = RESNET_SPECS[depth]
        if block is tv_resnet.BasicBlock and (groups != 1 or width_per_group != 64):
            raise ValueError(f"ResNet-{depth} has basic blocks, which do not support groups/width_per_group")
        net = tv_resnet.ResNet(
            block, layers, groups=groups, width_per_group=width_per_group, norm_layer=FrozenStatsBatchNorm2d if norm_eval else nn.BatchNorm2d
        )
        self.depth, self.groups, self.width_per_group = depth, groups, width_per_group
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        expansion = block.expansion
        self.out_channels = [128 * expansion, 256 * expansion, 512 * expansion]
        self.frozen_stages = frozen_stages
        self._freeze()
        # Speed (docs/speed.md). channels_last: activations in NHWC, which oneDNN convolves ~20% faster on CPU
        # than NCHW; conv outputs differ from NCHW's in the last bits (~1e-6 relative), like any other conv
        # algorithm choice. fuse_frozen_bn: where no gradient flows through a block (inference, and the frozen
        # stem and layer1 in training), convolve with BatchNorm folded into the weights and the ReLU / residual
        # addition fused into the convolution; same function, float rounding differs by ~1e-6 relative.
        self.channels_last = True
        self.fuse_frozen_bn = True

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
        traced = torch.compiler.is_compiling() or torch.jit.is_tracing()
        if self.channels_last and not traced:
            x = x.contiguous(memory_format=torch.channels_last)
        fused = self.fuse_frozen_bn and not traced and _fused_ops_available()
        if fused and _no_grad_needed(x, (self.conv1, self.bn1)):
            x = _conv_bn(self.conv1, self.bn1, x, relu=True)
        else:
            x = self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in layer:
                if fused and _no_grad_needed(x, (block,)):
                    x = _fused_block(block, x)
                else:
                    x = block(x)
            feats.append(x)
        return feats[1:]

    def load_torchvision_weights(self, state_dict: dict[str, Tensor]) -> None:
        """Load an ImageNet classification state dict (its ``fc.*`` entries are dropped)."""
        sd = {k: v for k, v in state_dict.items() if not k.startswith("fc.")}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise ValueError(f"backbone weights do not fit ResNet-{self.depth}: missing {missing[:5]}, unexpected {unexpected[:5]}")


def _fused_ops_available() -> bool:
    return hasattr(torch.ops, "mkldnn") and hasattr(torch.ops.mkldnn, "_convolution_pointwise") and torch.backends.mkldnn.is_available()


def _no_grad_needed(x: Tensor, modules: Sequence[nn.Module]) -> bool:
    """True when running ``modules`` on ``x`` records no autograd graph and every BatchNorm in them uses its
    running statistics (it does not, briefly, in gfldet.engine.norm_init)."""
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, nn.BatchNorm2d) and sub.training:
                return False
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return True
    if x.requires_grad:
        return False
    return not any(p.requires_grad for m in modules for p in m.parameters())


# id(conv) -> (version key, folded weight, folded bias, conv) ; see _folded
_FOLD_CACHE: dict[int, tuple[tuple, Tensor, Tensor, nn.Conv2d]] = {}


def _folded(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[Tensor, Tensor]:
    """``conv`` followed by eval-mode ``bn`` as one convolution: weight * a, bias b (a = gamma / sqrt(var + eps),
    b = beta - mean * a, computed in float64). Cached until any of the tensors involved changes in place
    (optimizer step, load_state_dict) or is replaced."""
    tensors = [conv.weight, bn.weight, bn.bias, bn.running_mean, bn.running_var]
    if conv.bias is not None:
        tensors.append(conv.bias)
    key = tuple((t.data_ptr(), t._version) for t in tensors) + (bn.eps, conv.weight.dtype, conv.weight.device)
    hit = _FOLD_CACHE.get(id(conv))
    if hit is not None and hit[0] == key and hit[3] is conv:
        return hit[1], hit[2]
    with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode too
        a = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
        b = bn.bias.double() - bn.running_mean.double() * a
        if conv.bias is not None:
            b = b + conv.bias.double() * a
        w = (conv.weight.double() * a[:, None, None, None]).to(conv.weight.dtype)
        w = w.contiguous(memory_format=torch.channels_last)
        b = b.to(conv.weight.dtype)
    if len(_FOLD_CACHE) > 4096:
        _FOLD_CACHE.clear()
    _FOLD_CACHE[id(conv)] = (key, w, b, conv)
    return w, b


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: Tensor, relu: bool = False, residual: Tensor | None = None) -> Tensor:
    """``relu?(bn(conv(x)) [+ residual])`` as one oneDNN convolution with the BatchNorm folded in and the
    addition / ReLU as post-ops (the fused ReLU and addition round exactly as the separate ops do)."""
    w, b = _folded(conv, bn)
    if x.dtype != torch.float32 or w.dtype != torch.float32 or x.device.type != "cpu":  # e.g. autocast or CUDA: plain ops on the folded weights
        y = F.conv2d(x, w.to(x.dtype), b.to(x.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
        if residual is not None:
            y = y + residual
        return y.relu_() if relu else y
    args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if residual is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual.contiguous(memory_format=torch.channels_last), w, b, *args, "add", None,
            "relu" if relu else "none", [], ""
        )
    return torch.ops.mkldnn._convolution_pointwise(x, w, b, *args, "relu" if relu else "none", [], "")


def _fused_block(block: nn.Module, x: Tensor) -> Tensor:
    """A torchvision Bottleneck / BasicBlock (eval-mode BatchNorm, no autograd) with fused convolutions."""
    ds = block.downsample
    if ds is not None and not (
        isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d) and isinstance(ds[1], nn.BatchNorm2d)
    ):
        return block(x)
    if ds is not None:
        ds_conv, ds_bn = block.downsample[0], block.downsample[1]
        identity = _conv_bn(ds_conv, ds_bn, x)
    else:
        identity = x
    if isinstance(block, tv_resnet.Bottleneck):
        out = _conv_bn(block.conv1, block.bn1, x, relu=True)
        out = _conv_bn(block.conv2, block.bn2, out, relu=True)
        return _conv_bn(block.conv3, block.bn3, out, relu=True, residual=identity)
    out = _conv_bn(block.conv1, block.bn1, x, relu=True)
    return _conv_bn(block.conv2, block.bn2, out, relu=True, residual=identity)


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
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        outs = [self.fpn_convs[i](lat) for i, lat in enumerate(laterals)]
        for conv in self.fpn_convs[len(laterals):]:
            outs.append(conv(outs[-1]))
        return outs
