"""The COCO dataset's training augmentation: a left-right flip of an image and its boxes.

Boxes are ``(M, 4)`` ``xyxy`` float tensors in pixels; images are ``(C, H, W)`` tensors; nothing here mutates its
inputs. (The keep-ratio resize is the detector's own, :func:`gfldet.ops.resize.keep_ratio_size`.)
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["hflip"]


def hflip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror an image ``(..., H, W)`` and its ``xyxy`` boxes left-right: ``x' = W - x``.

    Returns new tensors ``(flipped_image, flipped_boxes)``; ``x0`` and ``x1`` swap so boxes stay ``xyxy``.
    """
    w = image.shape[-1]
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    flipped = torch.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], dim=-1)
    return image.flip(-1), flipped
