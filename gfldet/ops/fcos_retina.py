"""Assignment schemes other than ATSS (the paper's Table 1(c)): FCOS-style and RetinaNet-style.

Both return an :class:`~gfldet.ops.assign_result.AssignResult`, like :func:`~gfldet.ops.atss.atss_assign`, so the
rest of the training targets does not depend on the scheme. Both are vectorised over the images of a batch and
over the boxes: the ground truths of the batch are padded to ``(N, M)`` and every rule is a tensor operation on
``(N, M, a)`` blocks of ``a`` anchors (a loop over anchor chunks bounds the memory, never a loop over boxes).

* :func:`fcos_assign` (Tian et al., ICCV 2019, with the centre sampling of mmdetection's ``FCOSHead``): a
  location is positive for a GT when it lies inside the GT's centre region (radius ``1.5 x stride`` around the
  GT centre, clipped to the box) and the largest of its four distances to the GT edges falls in the level's
  regression range; a location positive for several GTs takes the one of smallest area.
* :func:`retina_assign` (mmdetection's ``MaxIoUAssigner`` as RetinaNet configures it): IoU >= 0.5 positive,
  < 0.4 negative, in between ignored; then every GT also takes the anchors of its highest IoU (all of them on
  ties, ``gt_max_assign_all``) if that IoU is >= ``min_pos_iou``.

Shapes: N images, A anchors (all levels), M the most GTs of an image, G GTs of the whole batch, a anchors of one
chunk.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import GfldetError
from .assign_result import AssignResult
from .boxes import box_centers, box_iof

__all__ = ["fcos_assign", "retina_assign", "fcos_regress_ranges"]

# mmdetection's FCOSHead marks "not a candidate" areas with this value.
_INF = 100000000.0


def fcos_regress_ranges(bounds: Sequence[float], num_levels: int) -> list[tuple[float, float]]:
    """``(64, 128, 256, 512)`` -> ``[(-1, 64), (64, 128), (128, 256), (256, 512), (512, inf)]`` (FCOS)."""
    if len(bounds) != num_levels - 1:
        raise GfldetError(f"fcos_range_bounds {tuple(bounds)} must hold {num_levels - 1} values for {num_levels} levels")
    if any(b <= a for a, b in zip(bounds[:-1], bounds[1:])):
        raise GfldetError(f"fcos_range_bounds {tuple(bounds)} must increase")
    edges = [-1.0, *[float(b) for b in bounds], float("inf")]
    return list(zip(edges[:-1], edges[1:]))


def _pad_gts(gt_boxes: Sequence[Tensor], like: Tensor) -> tuple[Tensor, Tensor]:
    """Per image ``(M_i, 4)`` -> ``(N, M, 4)`` boxes and ``(N, M)`` bool of real (not padding) entries."""
    num_images = len(gt_boxes)
    m = max([int(b.shape[0]) for b in gt_boxes] + [0])
    boxes = like.new_zeros(num_images, m, 4)
    real = torch.zeros(num_images, m, dtype=torch.bool, device=like.device)
    for i, b in enumerate(gt_boxes):  # a copy per image, not per box
        boxes[i, : b.shape[0]] = b.to(like)
        real[i, : b.shape[0]] = True
    return boxes, real


def _ignore_regions(anchors: Tensor, gt_ignore, num_images: int, thr: float) -> Tensor | None:
    """``(N, A)`` bool: anchors whose intersection over their own area with an ignore region exceeds ``thr``."""
    if gt_ignore is None or thr <= 0:
        return None
    out = None
    for i, ign in enumerate(gt_ignore):
        if ign is not None and ign.numel() > 0:
            hit = box_iof(anchors, ign.to(anchors)).amax(dim=1) > thr
            if hit.any():
                if out is None:
                    out = torch.zeros(num_images, anchors.shape[0], dtype=torch.bool, device=anchors.device)
                out[i] |= hit
    return out


def _chunks(num_anchors: int, rows: int, chunk_elements: int):
    step = max(1, chunk_elements // max(1, rows))
    for a0 in range(0, num_anchors, step):
        yield a0, min(num_anchors, a0 + step)


@torch.no_grad()
def fcos_assign(
    anchors: Tensor,
    anchor_strides: Tensor,
    regress_ranges: Tensor,
    gt_boxes: Sequence[Tensor],
    valid: Tensor | None = None,
    gt_ignore: Sequence[Tensor | None] | None = None,
    center_radius: float = 1.5,
    ignore_iof_thr: float = 0.5,
    chunk_elements: int = 1 << 23,
) -> AssignResult:
    """FCOS assignment of the locations (the anchors' centres) to ground truths.

    Args:
        anchors: ``(A, 4)`` priors of all levels; only their centres are used (the locations).
        anchor_strides: ``(A,)`` the stride of each location's level.
        regress_ranges: ``(A, 2)`` ``(lo, hi)`` of each location's level: positive only when
            ``lo <= max(l, t, r, b) <= hi``.
        gt_boxes: per image ``(M_i, 4)`` xyxy.
        valid: optional ``(N, A)`` bool; invalid locations are never positive and come back ignored.
        gt_ignore: optional per image ignore regions (crowd boxes); locations whose prior box is mostly inside
            one (IoF > ``ignore_iof_thr``) are ignored unless positive.
        center_radius: the centre-sampling radius in strides (1.5 in mmdetection's FCOS configs). 0 disables
            centre sampling (inside the box is enough).
    """
    num_images, num_anchors = len(gt_boxes), anchors.shape[0]
    device = anchors.device
    if valid is None:
        valid = torch.ones(num_images, num_anchors, dtype=torch.bool, device=device)
    gt_index = torch.full((num_images, num_anchors), -1, dtype=torch.long, device=device)
    ignored = ~valid
    blocked = _ignore_regions(anchors, gt_ignore, num_images, ignore_iof_thr)
    if blocked is not None:
        ignored = ignored | blocked
    gts, real = _pad_gts(gt_boxes, anchors)  # (N, M, 4), (N, M)
    num_cand = torch.zeros(num_images, gts.shape[1], dtype=torch.long, device=device)
    if gts.shape[1] == 0 or num_anchors == 0:
        return AssignResult(gt_index, gt_index >= 0, ignored, num_cand[real])

    pts = box_centers(anchors)  # (A, 2)
    areas = (gts[..., 2] - gts[..., 0]) * (gts[..., 3] - gts[..., 1])  # (N, M)
    gcx, gcy = (gts[..., 0] + gts[..., 2]) / 2, (gts[..., 1] + gts[..., 3]) / 2
    rows = num_images * gts.shape[1]
    for a0, a1 in _chunks(num_anchors, rows, chunk_elements):
        xs, ys = pts[None, None, a0:a1, 0], pts[None, None, a0:a1, 1]  # (1, 1, a)
        g = gts[:, :, None, :]  # (N, M, 1, 4)
        dist = torch.stack([xs - g[..., 0], ys - g[..., 1], g[..., 2] - xs, g[..., 3] - ys], dim=-1)  # (N, M, a, 4)
        if center_radius > 0:
            r = anchor_strides[None, None, a0:a1].to(gts) * center_radius  # (1, 1, a)
            cx, cy = gcx[..., None], gcy[..., None]
            x_min = torch.maximum(cx - r, g[..., 0])
            y_min = torch.maximum(cy - r, g[..., 1])
            x_max = torch.minimum(cx + r, g[..., 2])
            y_max = torch.minimum(cy + r, g[..., 3])
            inside = torch.stack([xs - x_min, ys - y_min, x_max - xs, y_max - ys], dim=-1).amin(dim=-1) > 0
        else:
            inside = dist.amin(dim=-1) > 0
        reach = dist.amax(dim=-1)  # (N, M, a)
        rng = regress_ranges[a0:a1].to(gts)
        in_range = (reach >= rng[None, None, :, 0]) & (reach <= rng[None, None, :, 1])
        ok = inside & in_range & real[..., None] & valid[:, None, a0:a1]
        num_cand += ok.sum(dim=2)
        cost = torch.where(ok, areas[..., None].expand_as(ok), torch.full_like(reach, _INF))
        best, idx = cost.min(dim=1)  # (N, a): the smallest area; the first GT on ties
        hit = best < _INF
        gt_index[:, a0:a1] = torch.where(hit, idx, torch.full_like(idx, -1))
    positive = gt_index >= 0
    return AssignResult(gt_index, positive, ignored & ~positive, num_cand[real])


@torch.no_grad()
def retina_assign(
    anchors: Tensor,
    gt_boxes: Sequence[Tensor],
    valid: Tensor | None = None,
    gt_ignore: Sequence[Tensor | None] | None = None,
    pos_iou_thr: float = 0.5,
    neg_iou_thr: float = 0.4,
    min_pos_iou: float = 0.0,
    ignore_iof_thr: float = 0.5,
    chunk_elements: int = 1 << 23,
) -> AssignResult:
    """Max-IoU assignment (RetinaNet): positives at IoU >= ``pos_iou_thr``, negatives below ``neg_iou_thr``,
    the band between ignored; each GT also takes its highest-IoU anchors (low-quality matches).

    As mmdetection's ``MaxIoUAssigner`` with ``gt_max_assign_all=True``: a GT whose best IoU is >=
    ``min_pos_iou`` takes every anchor with exactly that IoU, GTs taken in order so that a later GT overrides
    an earlier one on a shared anchor. With ``min_pos_iou = 0`` (RetinaNet's setting) a GT that overlaps no
    valid anchor at all would take every anchor of IoU 0, as the reference does; a GT inside the image always
    overlaps some anchor. Only valid anchors take part (the reference's ``allowed_border=-1``).
    """
    num_images, num_anchors = len(gt_boxes), anchors.shape[0]
    device = anchors.device
    if not 0 <= neg_iou_thr <= pos_iou_thr <= 1:
        raise GfldetError(f"need 0 <= neg_iou_thr ({neg_iou_thr}) <= pos_iou_thr ({pos_iou_thr}) <= 1")
    if valid is None:
        valid = torch.ones(num_images, num_anchors, dtype=torch.bool, device=device)
    gts, real = _pad_gts(gt_boxes, anchors)  # (N, M, 4), (N, M)
    m = gts.shape[1]
    blocked = _ignore_regions(anchors, gt_ignore, num_images, ignore_iof_thr)
    gt_index = torch.full((num_images, num_anchors), -1, dtype=torch.long, device=device)
    if m == 0 or num_anchors == 0:  # no GT: every valid anchor is a negative
        ignored = ~valid if blocked is None else (~valid | blocked)
        return AssignResult(gt_index, gt_index >= 0, ignored, torch.zeros(0, dtype=torch.long, device=device))

    area_g = (gts[..., 2] - gts[..., 0]) * (gts[..., 3] - gts[..., 1])  # (N, M)

    def overlaps(a0: int, a1: int) -> Tensor:  # (N, M, a) IoU, -1 at padding GTs and invalid anchors
        anc = anchors[a0:a1]
        area_a = (anc[:, 2] - anc[:, 0]) * (anc[:, 3] - anc[:, 1])
        lt = torch.maximum(gts[:, :, None, :2], anc[None, None, :, :2])
        rb = torch.minimum(gts[:, :, None, 2:], anc[None, None, :, 2:])
        wh = (rb - lt).clamp(min=0)
        inter = wh[..., 0] * wh[..., 1]
        union = torch.clamp(area_g[..., None] + area_a[None, None] - inter, min=1e-6)
        iou = inter / union
        keep = real[..., None] & valid[:, None, a0:a1]
        return torch.where(keep, iou, torch.full_like(iou, -1.0))

    # pass 1: each GT's highest IoU over all valid anchors
    gt_max = torch.full((num_images, m), -1.0, dtype=anchors.dtype, device=device)
    rows = num_images * m
    for a0, a1 in _chunks(num_anchors, rows, chunk_elements):
        gt_max = torch.maximum(gt_max, overlaps(a0, a1).amax(dim=2))
    low_ok = real & (gt_max >= min_pos_iou)  # (N, M) GTs allowed low-quality matches

    # pass 2: per anchor decisions
    ignored = torch.zeros(num_images, num_anchors, dtype=torch.bool, device=device)
    num_cand = torch.zeros(num_images, m, dtype=torch.long, device=device)
    for a0, a1 in _chunks(num_anchors, rows, chunk_elements):
        iou = overlaps(a0, a1)  # (N, M, a)
        best = iou.amax(dim=1)  # (N, a)
        arg = iou.argmax(dim=1)  # the first GT on ties, as torch's argmax documents
        idx = torch.where(best >= pos_iou_thr, arg, torch.full_like(arg, -1))
        negative = valid[:, a0:a1] & (best < neg_iou_thr)  # also every valid anchor of an image without GTs
        eq = (iou == gt_max[..., None]) & low_ok[..., None]  # (N, M, a)
        has = eq.any(dim=1)
        last = (m - 1) - eq.flip(1).to(torch.uint8).argmax(dim=1)  # the last GT wins (it is assigned last)
        idx = torch.where(has, last, idx)
        num_cand += ((iou >= pos_iou_thr) | eq).sum(dim=2)
        gt_index[:, a0:a1] = idx
        # neither positive nor negative: the IoU band [neg, pos), and invalid anchors
        ignored[:, a0:a1] = (idx < 0) & ~negative
    positive = gt_index >= 0
    if blocked is not None:
        ignored = ignored | (blocked & ~positive)
    return AssignResult(gt_index, positive, ignored & ~positive, num_cand[real])
