"""The CPU convolution fast path as tensor maths: a convolution with eval-mode BatchNorm folded into its weights
(differentiable, :func:`conv_bn_folded`), and oneDNN convolutions on pre-packed folded weights with the ReLU /
residual addition fused in (no autograd, :func:`conv2d`).

Both compute the same function as the plain modules; float rounding differs by about 1e-6 relative, like any other
convolution algorithm choice. When they may run instead of the modules (no gradient needed, not traced, no hooks,
...) is decided by gfldet.models.fusion. Measured effect: docs/speed.md.
"""
from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["available", "conv_bn_folded", "conv2d", "clear_cache"]


def available() -> bool:
    """The fused oneDNN convolution operators exist in this torch build."""
    return (
        hasattr(torch.ops, "mkldnn")
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
        and torch.backends.mkldnn.is_available()
    )


def conv_bn_folded(conv: nn.Conv2d, x: Tensor, bn: nn.BatchNorm2d, relu: bool = False,
                   residual: Tensor | None = None) -> Tensor:
    """``relu?(bn(conv(x)) [+ residual])`` for an eval-mode ``bn`` as one convolution with folded weights,
    differentiable in the conv weight and bn's weight and bias (``a = gamma / sqrt(var + eps)``,
    ``b = beta - mean * a``), which saves BatchNorm's forward, backward and saved activations in training."""
    a = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
    b = bn.bias - bn.running_mean * a
    if conv.bias is not None:
        b = b + conv.bias * a
    y = F.conv2d(x, conv.weight * a.reshape(-1, 1, 1, 1), b, conv.stride, conv.padding, conv.dilation, conv.groups)
    if residual is not None:
        y = y + residual
    return F.relu(y) if relu else y


def clear_cache() -> None:
    """Forget every folded and packed weight. The cache notices in-place changes through the tensors' version
    counters (optimizer steps, ``load_state_dict``, ``copy_``); a change made through ``.data`` or by code that
    swaps storage without a version bump is invisible to it: call this after such a change."""
    _CACHE.clear()


# conv -> (version key, plain folded weight, bias, {input shape: packed weight}); see _prepared. Weak keys: an entry
# goes with its module, and a dead module's id can never alias a live one.
_CACHE: "weakref.WeakKeyDictionary[nn.Conv2d, tuple[tuple, Tensor, Tensor | None, dict[tuple[int, ...], Tensor]]]" = (
    weakref.WeakKeyDictionary())
_PACKS_PER_CONV = 4  # memory bound: at most this many packed copies of a weight (evaluation at varying sizes)


def _prepared(conv: nn.Conv2d, bn: nn.BatchNorm2d | None, input_shape: Sequence[int]) -> tuple[Tensor, Tensor, Tensor | None]:
    """``conv`` followed by eval-mode ``bn`` as one convolution: weight * a, bias b (a = gamma / sqrt(var + eps),
    b = beta - mean * a, computed in float64; without ``bn`` the conv's own weight and bias). Returns the weight
    in oneDNN's blocked layout for this input shape, the plain weight and the bias. oneDNN picks the layout from
    the whole problem (a weight packed for an 80x80 input and used on a 40x40 one is re-ordered on every call,
    3x slower), so packs are kept per input shape. Cached until any of the tensors involved changes in place
    (optimizer step, load_state_dict) or is replaced."""
    tensors = [conv.weight] + ([conv.bias] if conv.bias is not None else [])
    if bn is not None:
        tensors += [bn.weight, bn.bias, bn.running_mean, bn.running_var]
    # Tensors made under torch.inference_mode have no version counter, so an in-place change to them could not be
    # seen: fold afresh on every call and do not pack (F.conv2d on the folded weight), never serve a stale copy.
    cacheable = not any(t.is_inference() for t in tensors)
    key = tuple((t.data_ptr(), t._version) for t in tensors) + (
        bn.eps if bn is not None else None, id(bn), conv.weight.dtype, conv.weight.device) if cacheable else None
    hit = _CACHE.get(conv) if cacheable else None
    if hit is None or hit[0] != key:
        with torch.inference_mode(False), torch.no_grad():  # plain tensors, usable outside inference mode too
            if bn is not None:
                a = bn.weight.double() / (bn.running_var.double() + bn.eps).sqrt()
                b = bn.bias.double() - bn.running_mean.double() * a
                if conv.bias is not None:
                    b = b + conv.bias.double() * a
                w = (conv.weight.double() * a[:, None, None, None]).to(conv.weight.dtype)
                b = b.to(conv.weight.dtype)
            else:  # no copy: the version key notices any in-place change
                w = conv.weight.detach()
                b = conv.bias.detach() if conv.bias is not None else None
        if not cacheable:
            return w, w, b
        hit = _CACHE[conv] = (key, w, b, {})
    _, w, b, packs = hit
    if w.device.type != "cpu" or w.dtype != torch.float32 or not available():
        return w, w, b
    shape = tuple(int(d) for d in input_shape)
    packed = packs.get(shape)
    if packed is None:
        if len(packs) >= _PACKS_PER_CONV:
            packs.pop(next(iter(packs)))
        with torch.inference_mode(False), torch.no_grad():
            packed = packs[shape] = torch.ops.mkldnn._reorder_convolution_weight(
                w, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups, list(shape))
    return packed, w, b


def conv2d(conv: nn.Conv2d, x: Tensor, bn: nn.BatchNorm2d | None = None, relu: bool = False,
           residual: Tensor | None = None) -> Tensor:
    """``relu?(bn?(conv(x)) [+ residual])`` as one convolution (the fused ReLU and addition round exactly as the
    separate ops do). No autograd graph is recorded through it (gfldet.models.fusion calls it only where none is needed).
    Output is channels_last for float32 CPU input."""
    if isinstance(conv.padding, str):
        raise ValueError(f"fast_conv.conv2d needs numeric padding, got {conv.padding!r}")
    packed, w, b = _prepared(conv, bn, x.shape)
    if x.dtype != torch.float32 or w.dtype != torch.float32 or x.device.type != "cpu" or packed is w:
        y = F.conv2d(x, w.to(x.dtype), None if b is None else b.to(x.dtype), conv.stride, conv.padding, conv.dilation, conv.groups)
        if residual is not None:
            y = y + residual
        return y.relu_() if relu else y
    x = x.contiguous(memory_format=torch.channels_last)
    args = (list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups)
    if residual is not None:
        return torch.ops.mkldnn._convolution_pointwise.binary(
            x, residual.contiguous(memory_format=torch.channels_last), packed, b, *args, "add", None,
            "relu" if relu else None, [], ""
        )
    return torch.ops.mkldnn._convolution_pointwise(x, packed, b, *args, "relu" if relu else "none", [], "")
