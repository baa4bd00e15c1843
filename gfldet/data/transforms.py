"""Small pure box/image transforms used by the COCO dataset (and available to a training loop).

Boxes are ``(M, 4)`` ``xyxy`` float tensors in pixels; images are ``(C, H, W)`` tensors. Nothing here
mutates its inputs, and all randomness comes from an explicit :class:`torch.Generator`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..ops.resize import keep_ratio_size

__all__ = [
    "coco_xywh_to_xyxy",
    "clip_boxes_to_image",
    "hflip",
    "resize_keep_ratio_size",
    "choose_scale",
]


def coco_xywh_to_xyxy(boxes: Tensor | Sequence) -> Tensor:
    """COCO ``[x, y, w, h]`` boxes ``(..., 4)`` -> ``[x0, y0, x1, y1] = [x, y, x + w, y + h]``.

    Accepts anything :func:`torch.as_tensor` does; integer input comes back as float32.
    """
    b = torch.as_tensor(boxes)
    if not b.is_floating_point():
        b = b.to(torch.float32)
    if b.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(b.shape)}")
    return torch.cat([b[..., :2], b[..., :2] + b[..., 2:]], dim=-1)


def clip_boxes_to_image(boxes: Tensor, size: tuple[int, int]) -> Tensor:
    """Clip ``xyxy`` boxes to an image of ``size = (H, W)``: x into ``[0, W]``, y into ``[0, H]``."""
    h, w = size
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    x = boxes[..., 0::2].clamp(0, w)
    y = boxes[..., 1::2].clamp(0, h)
    return torch.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], dim=-1)


def hflip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror an image ``(..., H, W)`` and its ``xyxy`` boxes left-right: ``x' = W - x``.

    Returns new tensors ``(flipped_image, flipped_boxes)``; ``x0`` and ``x1`` swap so boxes stay ``xyxy``.
    """
    w = image.shape[-1]
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    flipped = torch.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], dim=-1)
    return image.flip(-1), flipped


def resize_keep_ratio_size(h: int, w: int, min_size: float | None, max_size: float | None) -> tuple[int, int]:
    """Size ``(new_h, new_w)`` of an ``h x w`` image resized keeping its aspect ratio: the detector's rule,
    :func:`gfldet.ops.resize.keep_ratio_size`."""
    return keep_ratio_size(h, w, min_size, max_size)


def choose_scale(generator: torch.Generator | None, min_sizes: int | Sequence[int]) -> int:
    """Multi-scale training: a short side drawn uniformly from ``min_sizes`` with ``generator``.

    A single int (or a one-element list) is returned as is, without drawing from the generator.
    """
    if isinstance(min_sizes, int):
        return min_sizes
    sizes = list(min_sizes)
    if not sizes:
        raise ValueError("min_sizes must not be empty")
    if len(sizes) == 1:
        return sizes[0]
    i = int(torch.randint(len(sizes), (), generator=generator))
    return sizes[i]
