"""The COCO dataset's training augmentation: a left-right flip of an image and its boxes, and the mosaic of four
images.

Boxes are ``(M, 4)`` ``xyxy`` float tensors in pixels; images are ``(C, H, W)`` tensors; nothing here mutates its
inputs. (The keep-ratio resize is the detector's own, :func:`gfldet.ops.resize.keep_ratio_size`; the mosaic shrinks
a larger image with :func:`gfldet.ops.resize.fit_size` and the detector's bilinear interpolation.)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.resize import fit_size

__all__ = ["hflip", "mosaic", "MOSAIC_MIN_VISIBLE"]

# a box cut by the mosaic's window keeps its label where at least this share of its area (and 2 pixels of each side)
# stays inside; a smaller sliver is dropped and its pixels count as background. Boxes the window does not cut are kept
# whatever their size, and crowd regions wherever some of them shows (they are ignored regions, not objects).
MOSAIC_MIN_VISIBLE = 0.25


def hflip(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """Mirror an image ``(..., H, W)`` and its ``xyxy`` boxes left-right: ``x' = W - x``.

    Returns new tensors ``(flipped_image, flipped_boxes)``; ``x0`` and ``x1`` swap so boxes stay ``xyxy``.
    """
    w = image.shape[-1]
    if boxes.shape[-1:] != (4,):
        raise ValueError(f"boxes must have shape (..., 4), got {tuple(boxes.shape)}")
    flipped = torch.stack([w - boxes[..., 2], boxes[..., 1], w - boxes[..., 0], boxes[..., 3]], dim=-1)
    return image.flip(-1), flipped


def mosaic(parts: list[tuple[Tensor, dict[str, Tensor]]], centre: tuple[float, float],
           min_visible: float = MOSAIC_MIN_VISIBLE) -> tuple[Tensor, dict[str, Tensor]]:
    """Four images in one, at their own scale: the mosaic augmentation (Bochkovskiy et al., YOLOv4, 2020).

    ``parts`` are four ``(image (3, h, w) uint8, {"boxes" (M, 4) xyxy, "labels" (M,), "iscrowd" (M,)})``; the first
    fixes the output size ``(H, W)``. Each is resized (keeping its aspect ratio, bilinear) to fit ``H x W`` where it
    does not already, and placed with a corner at the point ``centre`` (``(cx, cy)`` in output pixels, inside
    ``[0, W] x [0, H]``) where the four meet: the first top-left of it, then top-right, bottom-left, bottom-right
    (each image's inner corner at the point, so each shows its own corner region). What no image covers is grey
    (114, as YOLO's). Boxes follow their image and are clipped to what the output shows of it; a box that the
    clipping cuts keeps its label where at least ``min_visible`` of its area and 2 pixels of each side remain (a
    crowd region: where any of it remains). Returns ``(image, target)`` with the same keys.
    """
    if len(parts) != 4:
        raise ValueError(f"mosaic needs 4 images, got {len(parts)}")
    H, W = int(parts[0][0].shape[-2]), int(parts[0][0].shape[-1])
    cx, cy = int(round(float(centre[0]))), int(round(float(centre[1])))
    if not (0 <= cx <= W and 0 <= cy <= H):
        raise ValueError(f"mosaic centre {centre} is outside the {W}x{H} output")
    out = torch.full((3, H, W), 114, dtype=torch.uint8, device=parts[0][0].device)
    boxes, labels, crowd = [], [], []
    for k, (image, target) in enumerate(parts):
        h, w = int(image.shape[-2]), int(image.shape[-1])
        b = target["boxes"].float()
        nh, nw = fit_size(h, w, H, W)
        if (nh, nw) != (h, w):  # the detector's interpolation (gfldet.models.transform.resize_image)
            image = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear",
                                  align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
            b = b * b.new_tensor([nw / w, nh / h, nw / w, nh / h])
            h, w = nh, nw
        # top-left corner of this image in output pixels: its inner corner touches the meeting point
        px = cx - (w if k in (0, 2) else 0)
        py = cy - (h if k in (0, 1) else 0)
        # the part of the output this image covers
        ax0, ay0, ax1, ay1 = max(px, 0), max(py, 0), min(px + w, W), min(py + h, H)
        if ax1 > ax0 and ay1 > ay0:
            out[:, ay0:ay1, ax0:ax1] = image[:, ay0 - py:ay1 - py, ax0 - px:ax1 - px]
        if b.numel() == 0:
            continue
        shifted = b + b.new_tensor([px, py, px, py])
        # only what the output shows of this image counts
        lo, hi = b.new_tensor([ax0, ay0, ax0, ay0]), b.new_tensor([ax1, ay1, ax1, ay1])
        clipped = torch.maximum(torch.minimum(shifted, hi), lo)
        area = (shifted[:, 2] - shifted[:, 0]) * (shifted[:, 3] - shifted[:, 1])
        cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
        shows = (cw > 0) & (ch > 0)
        cut = (clipped != shifted).any(dim=1)
        crowd_k = target["iscrowd"].bool()
        keep = shows & (~cut | crowd_k | ((cw >= 2) & (ch >= 2) & (cw * ch >= min_visible * area)))
        boxes.append(clipped[keep])
        labels.append(target["labels"][keep])
        crowd.append(target["iscrowd"][keep])
    if boxes:
        target = {"boxes": torch.cat(boxes), "labels": torch.cat(labels), "iscrowd": torch.cat(crowd)}
    else:
        t0 = parts[0][1]
        target = {"boxes": t0["boxes"].new_zeros((0, 4)), "labels": t0["labels"][:0], "iscrowd": t0["iscrowd"][:0]}
    return out, target
