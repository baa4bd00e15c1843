"""Box geometry: areas, IoU / GIoU, and the distance <-> box coders.

Boxes are ``(..., 4)`` tensors in ``(x1, y1, x2, y2)`` order. Distances are ``(..., 4)`` in
``(left, top, right, bottom)`` order, measured from a point to the four box edges.

The arithmetic follows mmdetection's ``bbox_overlaps`` operation for operation (clamp of the
intersection at 0, ``max(union, eps)``), so that IoU values, and therefore ATSS thresholds and
QFL targets, agree bit for bit with the reference.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "box_area",
    "box_iou",
    "box_iou_aligned",
    "box_giou_aligned",
    "box_iof",
    "box_centers",
    "distance_to_box",
    "box_to_distance",
    "clip_boxes",
    "centerness_target",
]


def box_area(boxes: Tensor) -> Tensor:
    """Area of ``(..., 4)`` xyxy boxes; negative widths give negative areas (no clamp), as the reference."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def box_centers(boxes: Tensor) -> Tensor:
    """``(..., 4)`` xyxy -> ``(..., 2)`` centres ``((x1+x2)/2, (y1+y2)/2)``."""
    return torch.stack([(boxes[..., 0] + boxes[..., 2]) / 2.0, (boxes[..., 1] + boxes[..., 3]) / 2.0], dim=-1)


def box_iou(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise IoU: ``(..., P, 4)`` x ``(..., Q, 4)`` -> ``(..., P, Q)``."""
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - overlap
    union = torch.max(union, union.new_tensor([eps]))
    return overlap / union


def box_iof(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Pairwise intersection over the area of ``boxes1`` (foreground): ``(P, 4)`` x ``(Q, 4)`` -> ``(P, Q)``."""
    area1 = box_area(boxes1)
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    return overlap / torch.max(area1[..., :, None], area1.new_tensor([eps]))


def _aligned_terms(boxes1: Tensor, boxes2: Tensor, eps: float) -> tuple[Tensor, Tensor, Tensor]:
    area1 = box_area(boxes1)
    area2 = box_area(boxes2)
    lt = torch.max(boxes1[..., :2], boxes2[..., :2])
    rb = torch.min(boxes1[..., 2:], boxes2[..., 2:])
    wh = (rb - lt).clamp(min=0)
    overlap = wh[..., 0] * wh[..., 1]
    union = area1 + area2 - overlap
    union = torch.max(union, union.new_tensor([eps]))
    return overlap, union, overlap / union


def box_iou_aligned(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Element-wise IoU of two ``(..., 4)`` box tensors of the same shape -> ``(...)``."""
    return _aligned_terms(boxes1, boxes2, eps)[2]


def box_giou_aligned(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Element-wise generalised IoU (Rezatofighi et al. 2019) of two ``(..., 4)`` tensors -> ``(...)``; union and
    enclosing area are floored at ``eps`` (mmdetection's ``bbox_overlaps``, whose default is also 1e-6)."""
    _, union, iou = _aligned_terms(boxes1, boxes2, eps)
    enclose_lt = torch.min(boxes1[..., :2], boxes2[..., :2])
    enclose_rb = torch.max(boxes1[..., 2:], boxes2[..., 2:])
    enclose_wh = (enclose_rb - enclose_lt).clamp(min=0)
    enclose_area = enclose_wh[..., 0] * enclose_wh[..., 1]
    enclose_area = torch.max(enclose_area, enclose_area.new_tensor([eps]))
    return iou - (enclose_area - union) / enclose_area


def distance_to_box(points: Tensor, distances: Tensor, max_shape: tuple[int, int] | Tensor | None = None) -> Tensor:
    """Decode ``(..., 4)`` (l, t, r, b) distances from ``(..., 2)`` points into xyxy boxes.

    ``max_shape`` ``(H, W)`` clips x to ``[0, W]`` and y to ``[0, H]``; it may also be a ``(..., 2)``
    tensor of per-box ``(H, W)`` limits.
    """
    x1 = points[..., 0] - distances[..., 0]
    y1 = points[..., 1] - distances[..., 1]
    x2 = points[..., 0] + distances[..., 2]
    y2 = points[..., 1] + distances[..., 3]
    boxes = torch.stack([x1, y1, x2, y2], dim=-1)
    if max_shape is not None:
        boxes = clip_boxes(boxes, max_shape)
    return boxes


def clip_boxes(boxes: Tensor, max_shape: tuple[int, int] | Tensor) -> Tensor:
    """Clip xyxy boxes to an image: x to ``[0, W]``, y to ``[0, H]``.

    ``max_shape`` is ``(H, W)``, or a tensor whose last dim is ``(H, W)`` and that broadcasts against
    ``boxes[..., :2]`` (per-image limits for a batch).
    """
    hw = torch.as_tensor(max_shape, dtype=boxes.dtype, device=boxes.device)
    upper = torch.cat([hw.flip(-1), hw.flip(-1)], dim=-1)  # (W, H, W, H)
    return torch.min(boxes.clamp(min=0), upper)


def box_to_distance(points: Tensor, boxes: Tensor, max_dist: float | None = None, eps: float = 0.1) -> Tensor:
    """Encode xyxy boxes as ``(l, t, r, b)`` distances from ``(..., 2)`` points.

    With ``max_dist`` (the number of bins ``n``) the distances are clamped to ``[0, max_dist - eps]``
    so that the right bin ``floor(y) + 1`` of DFL always exists (the reference's ``eps = 0.1``).
    """
    left = points[..., 0] - boxes[..., 0]
    top = points[..., 1] - boxes[..., 1]
    right = boxes[..., 2] - points[..., 0]
    bottom = boxes[..., 3] - points[..., 1]
    dist = torch.stack([left, top, right, bottom], dim=-1)
    if max_dist is not None:
        dist = dist.clamp(min=0, max=max_dist - eps)
    return dist


def centerness_target(points: Tensor, boxes: Tensor) -> Tensor:
    """FCOS / ATSS centerness of ``(..., 2)`` points in their ``(..., 4)`` GT boxes:
    ``sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))``; 0 for a point outside its box (the reference
    never sees one with ATSS or FCOS; max-IoU assignment can give one)."""
    d = box_to_distance(points, boxes).clamp(min=0)
    lr = d[..., [0, 2]]
    tb = d[..., [1, 3]]
    ratio = (lr.amin(-1) / lr.amax(-1).clamp(min=1e-12)) * (tb.amin(-1) / tb.amax(-1).clamp(min=1e-12))
    return ratio.sqrt()
