"""The CPU fast path: fused subclasses of ResNetBackbone, FPN and the head's ConvGN, swapped in by
:func:`set_fusion` (what ``GFL.optimize_for_cpu()`` calls, once, explicitly; the commands do it on the CPU).

A fused module computes its plain module's function: on float32 CPU tensors the backbone runs in channels_last with
frozen BatchNorm folded into pre-packed oneDNN convolutions and the ReLU / residual addition fused in, the FPN's
top-down addition is fused into its lateral convolutions, the head's convolutions are pre-packed
(gfldet.ops.fast_conv). Where a gradient must flow, the backbone folds its frozen-statistics BatchNorm into the
convolutions inside the autograd graph, and the FPN and towers run their plain forward. Each fused forward runs the
plain one wherever the plain modules must run: on other devices than the CPU, under tracing (torch.export / ONNX,
torch.compile, jit), for modules with forward hooks or a padding mode other than zeros, and under CPU autocast.
The swap changes the instances' class only (as torch.nn.utils.parametrize does): the same parameters, buffers,
hooks and state_dict keys, and ``isinstance`` still holds; train() / eval() leave it as it is. Float rounding
differs from the plain modules by about 1e-6 relative (tests/models/test_fusion.py). Measured effect: docs/speed.md.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as torch_module
from torchvision.models import resnet as tv_resnet

from gfldet.models.backbone import FPN, ResNetBackbone
from gfldet.models.dcn import ModulatedDeformConv2d
from gfldet.models.head import ConvGN
from gfldet.ops import fast_conv

from ..errors import GfldetError

__all__ = ["set_fusion", "is_fused", "FusedResNetBackbone", "FusedFPN", "FusedConvGN"]


def tracing() -> bool:
    """True under torch.export / ONNX export, torch.compile or jit tracing."""
    return torch.compiler.is_compiling() or torch.jit.is_tracing()


def _autocast_cpu() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _global_hooks() -> bool:
    return any(getattr(torch_module, name, None) for name in ("_global_forward_hooks", "_global_forward_pre_hooks"))


def _no_grad_needed(x: Tensor | Sequence[Tensor], modules: Sequence[nn.Module]) -> bool:
    """Running ``modules`` on ``x`` (one tensor or several) records no autograd graph and every BatchNorm in them
    uses its running statistics (it does not, briefly, in gfldet.engine.norm_init)."""
    for m in modules:
        for sub in m.modules():
            if isinstance(sub, nn.BatchNorm2d) and sub.training:
                return False
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return True
    if any(t.requires_grad for t in ([x] if isinstance(x, Tensor) else x)):
        return False
    return not any(p.requires_grad for m in modules for p in m.parameters())


def _plain_only(modules: Sequence[nn.Module]) -> bool:
    """Modules whose own forward must run: forward hooks (feature extraction, FLOP counters, pruning masks,
    hook-based weight norm), a padding mode other than zeros, BatchNorm without running statistics or affine."""
    if _global_hooks():
        return True
    for m in modules:
        for sub in m.modules():
            if sub._forward_hooks or sub._forward_pre_hooks:
                return True
            if isinstance(sub, nn.Conv2d) and sub.padding_mode != "zeros":
                return True
            if isinstance(sub, nn.BatchNorm2d) and not (sub.affine and sub.track_running_stats):
                return True
    return False


def _foldable(x: Tensor | Sequence[Tensor], modules: Sequence[nn.Module]) -> bool:
    """``modules`` may run as :func:`fast_conv.conv2d` calls on ``x``: fused operators available, not traced, no
    gradient needed, no reason to run the modules' own forward, and not under CPU autocast (which asks for
    bfloat16 convolutions; the fused path would compute in float32)."""
    first = x if isinstance(x, Tensor) else x[0]
    return (fast_conv.available() and not tracing() and not (first.device.type == "cpu" and _autocast_cpu())
            and _no_grad_needed(x, modules) and not _plain_only(modules))


def _usable(x: Tensor | Sequence[Tensor], modules: Sequence[nn.Module]) -> bool:
    """:func:`_foldable`, and worth it for modules without BatchNorm: float32 CPU input (elsewhere fast_conv.conv2d
    would only run ``F.conv2d``) and parameters that are not inference tensors (made under torch.inference_mode:
    their weights cannot be cached)."""
    xs = [x] if isinstance(x, Tensor) else list(x)
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in xs) and _foldable(xs, modules)
            and not any(p.is_inference() for m in modules for p in m.parameters()))


def _grad_layout(x: Tensor) -> Tensor:
    """NCHW for modules that record an autograd graph: oneDNN's NHWC convolution forward is the faster one on the
    CPUs measured, its backward the slower one (docs/speed.md); unchanged otherwise."""
    return x.contiguous() if torch.is_grad_enabled() and not torch.is_inference_mode_enabled() else x


def _frozen_stats(block: nn.Module) -> bool:
    """Every BatchNorm in ``block`` normalises with its running statistics (eval mode)."""
    bns = [m for m in block.modules() if isinstance(m, nn.BatchNorm2d)]
    return bool(bns) and not any(m.training for m in bns)


def _deformable(block: nn.Module) -> bool:
    """A bottleneck whose conv2 is deformable: it runs its own forward (deform_conv2d has no fused form)."""
    return isinstance(getattr(block, "conv2", None), ModulatedDeformConv2d)


def _hooked(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks)


def _block_as_convs(block: nn.Module, x: Tensor, conv_bn) -> Tensor:
    """A torchvision Bottleneck / BasicBlock with eval-mode BatchNorm as a chain of ``conv_bn(conv, x, bn, relu,
    residual)`` calls (fast_conv.conv2d or fast_conv.conv_bn_folded: BatchNorm folded into each convolution, the
    residual addition and ReLU into the last)."""
    ds = block.downsample
    if ds is not None and not (
        isinstance(ds, nn.Sequential) and len(ds) == 2 and isinstance(ds[0], nn.Conv2d) and isinstance(ds[1], nn.BatchNorm2d)
    ):
        return block(x)
    identity = conv_bn(ds[0], x, ds[1]) if ds is not None else x
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if isinstance(block, tv_resnet.Bottleneck):
        pairs.append((block.conv3, block.bn3))
    out = x
    for conv, bn in pairs[:-1]:
        out = conv_bn(conv, out, bn, relu=True)
    conv, bn = pairs[-1]
    return conv_bn(conv, out, bn, relu=True, residual=identity)


class FusedResNetBackbone(ResNetBackbone):
    """ResNetBackbone in channels_last, block by block the fastest form that computes the same function: fused
    pre-packed convolutions where no gradient is needed (inference; the frozen stem and layer1 in training),
    BatchNorm folded into the convolutions inside the autograd graph where its statistics are frozen and a
    gradient is needed, the block itself otherwise (ordinary BatchNorm in training, hooks, deformable conv2)."""

    def forward(self, x: Tensor) -> list[Tensor]:
        # tracing: channels_last would make the tracer guard on the batch size (a size-1 dim has ambiguous strides);
        # other devices: their own kernels and layouts (channels_last is not forced on CUDA)
        if tracing() or x.device.type != "cpu":
            return super().forward(x)
        x = x.contiguous(memory_format=torch.channels_last)
        if _foldable(x, (self.conv1, self.bn1, self.relu)):
            x = fast_conv.conv2d(self.conv1, x, self.bn1, relu=True)
        else:
            x = self.relu(self.bn1(self.conv1(_grad_layout(x))))
        x = self.maxpool(x)
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            if _hooked(layer):
                x = layer(_grad_layout(x))
            else:
                for block in layer:
                    if _deformable(block):
                        x = block(_grad_layout(x))
                    elif _foldable(x, (block,)):
                        x = _block_as_convs(block, x, fast_conv.conv2d)
                    elif _frozen_stats(block) and not _plain_only((block,)):
                        x = _block_as_convs(block, _grad_layout(x), fast_conv.conv_bn_folded)
                    else:
                        x = block(_grad_layout(x))
            feats.append(x)
        return feats[1:]


class FusedFPN(FPN):
    """FPN with pre-packed convolutions and the top-down addition fused into the lateral convolutions (the same
    additions in the same order, so the same rounding), where no gradient is needed on float32 CPU input."""

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        if not _usable(feats, (self,)):
            return super().forward(feats)
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


class FusedConvGN(ConvGN):
    """ConvGN with a pre-packed convolution, where no gradient is needed on float32 CPU input."""

    def forward(self, x: Tensor) -> Tensor:
        if not _usable(x, (self,)):
            return super().forward(x)
        return self.gn(fast_conv.conv2d(self.conv, x)).relu_()


_FUSED: dict[type[nn.Module], type[nn.Module]] = {ResNetBackbone: FusedResNetBackbone, FPN: FusedFPN, ConvGN: FusedConvGN}
_PLAIN = {fused: plain for plain, fused in _FUSED.items()}


def set_fusion(module: nn.Module, enabled: bool) -> nn.Module:
    """Swap the fused classes into (``enabled``) or out of every ResNetBackbone, FPN and ConvGN in ``module`` (itself
    included; subclasses of them are left alone). Parameters, buffers, hooks and state_dict are untouched. Returns
    ``module``."""
    if not isinstance(enabled, bool):
        raise GfldetError(f"set_fusion takes enabled=True or False, got {enabled!r}")
    for m in module.modules():
        plain = _PLAIN.get(type(m), type(m))
        if plain in _FUSED:
            m.__class__ = _FUSED[plain] if enabled else plain
    return module


def is_fused(module: nn.Module) -> bool:
    """Whether any module in ``module`` runs a fused class (the CPU fast path is on)."""
    return any(type(m) in _PLAIN for m in module.modules())
